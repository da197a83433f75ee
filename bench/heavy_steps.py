"""Heavy requests against the event loop: the longest step each of the largest allowed requests
holds `shareflow serve`'s loop, seen from outside as the longest wait of `/healthz` requests sent
one after another while it runs (issue 22: a heavy request must not stall every other tenant)."""

from __future__ import annotations

import asyncio
import json
import statistics
import time

import httpx

from bench.common import VENV_BIN, Config, Row, Section, fmt_ms, serve
from bench.queries import QUOTE
from bench.usage import Setup, events

TITLE = "Heavy requests: the longest step holding the event loop"
GOAL_MS = 100.0
ITEMS = 5000
"The largest quote, recordUsage batch and NDJSON body a request may carry (5,000 items each)."
RECORD = """mutation($events: [UsageInput!]!) { recordUsage(events: $events) { accepted rejected } }"""


async def _probe(http: httpx.AsyncClient, done: asyncio.Event) -> list[float]:
    """Latencies of /healthz requests sent back to back until `done`."""
    waits = []
    while not done.is_set():
        started = time.perf_counter()
        (await http.get("/healthz")).raise_for_status()
        waits.append(time.perf_counter() - started)
    return waits


async def _while_probed(url: str, request) -> tuple[float, float]:
    """(the request's seconds, the longest /healthz wait meanwhile in seconds)."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as probe:
        done = asyncio.Event()
        watcher = asyncio.create_task(_probe(probe, done))
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        await request()
        took = time.perf_counter() - started
        done.set()
        waits = await watcher
    return took, max(waits)


async def measure(url: str, setup: Setup, rounds: int) -> dict[str, list[tuple[float, float]]]:
    usage = [{"metric": "minutes", "quantity": str(n % 90 + 1)} for n in range(ITEMS)]
    headers = {"Authorization": f"Bearer {setup.key}"}
    results: dict[str, list[tuple[float, float]]] = {"idle": [], "quote": [], "recordUsage": [], "/usage.ndjson": []}
    async with httpx.AsyncClient(base_url=url, timeout=120, headers=headers) as http:

        async def ok(response: httpx.Response) -> None:
            response.raise_for_status()
            if response.headers["content-type"].startswith("application/json") and response.json().get("errors"):
                raise RuntimeError(response.json()["errors"])

        async def idle() -> None:
            await asyncio.sleep(0.3)

        for number in range(rounds + 1):  # the first round warms the server up and is not counted
            batch = events(setup, f"heavy-{number}", 2 * ITEMS, seed=number)
            body = "\n".join(json.dumps(event) for event in batch[ITEMS:]).encode()
            requests = {
                "idle": idle,
                "quote": lambda: http.post("/graphql", json={"query": QUOTE, "variables": {
                    "serviceId": setup.service_gid, "usage": usage}}),
                "recordUsage": lambda: http.post("/graphql", json={"query": RECORD, "variables": {"events": batch[:ITEMS]}}),
                "/usage.ndjson": lambda: http.post("/usage.ndjson", content=body),
            }
            for name, request in requests.items():

                async def checked(request=request) -> None:
                    response = await request()
                    if response is not None:
                        await ok(response)

                measured = await _while_probed(url, checked)
                if number:
                    results[name].append(measured)
    return results


async def run(cfg: Config) -> Section:
    rounds = cfg.pick(5, 2)
    setup = Setup(cfg.workdir)
    argv = [str(VENV_BIN / "shareflow"), "serve", "--host", "127.0.0.1", "--port", "{port}"]
    env = {**setup.env, "SHAREFLOW_JSON_LOGS": "false", "SHAREFLOW_LOG_LEVEL": "WARNING"}
    with serve(argv, env=env, cwd=cfg.workdir, log=cfg.workdir / "heavy-serve.log") as server:
        results = await measure(server.url, setup, rounds)
    floor = statistics.median(wait for _, wait in results.pop("idle"))
    rows = []
    for name, measured in results.items():
        longest = statistics.median(wait for _, wait in measured) * 1000
        took = statistics.median(seconds for seconds, _ in measured) * 1000
        met = "**met**" if longest <= GOAL_MS else "**NOT met**"
        rows.append(Row(
            f"longest step: {name}", f"{ITEMS:,} items", fmt_ms(longest), f"idle /healthz longest wait {fmt_ms(floor * 1000)}",
            f"×{longest / (floor * 1000):.1f}",
            f"goal ≤ {GOAL_MS:.0f} ms: {met}; the request took {fmt_ms(took)}; rounds "
            + ", ".join(fmt_ms(wait * 1000) for _, wait in measured),
        ))
    method = (
        f"`shareflow serve` (one uvicorn worker) on a SQLite file seeded by `shareflow demo`; {rounds} rounds after one "
        f"of warm-up, each sending, as CityCar, the largest allowed `quote` ({ITEMS:,} usage items), `recordUsage` "
        f"({ITEMS:,} events) and `POST /usage.ndjson` ({ITEMS:,} lines), one at a time, while a second connection "
        "sends `GET /healthz` back to back: the longest of those waits is how long the request held the event loop in "
        "one step (at most; plus the probe's own request). Floor: the same probe for 0.3 s with nothing else running. "
        "Medians of the rounds."
    )
    return Section(TITLE, method, rows)

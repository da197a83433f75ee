"""Subscriptions (issue 7): N concurrent `settlementUpdated` subscribers on one `shareflow serve`
process each receive every update; latency from the `recordUsage` response to each delivery,
beside a floor measured in the same run: a plain Starlette WebSocket broadcast under the same
uvicorn settings, which answers the same protocol handshake and, on a POST, queues a message of
the same size to every socket (one sender task per socket, as the gateway has one per subscription).

    python -m bench.run --only subscriptions [--quick]
    python -m bench.subscriptions --floor --port 8001   # the floor server alone
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime

import httpx

from bench.common import VENV_BIN, Config, Row, Section, fmt_ms, percentile, serve

TITLE = "Subscriptions: `settlementUpdated` fan-out over WebSocket"
GOAL_P99_MS = 100.0
PROTOCOL = "graphql-transport-ws"
SUBSCRIPTION = (
    "subscription { settlementUpdated { party { id name } period currency "
    "receivable { amount currency } payable { amount currency } net { amount currency } } }"
)
RECORD = "mutation($events: [UsageInput!]!) { recordUsage(events: $events) { accepted rejected } }"
CHAIN = ["MobilityHub", "CityCar", "FleetCare", "ParkSpace", "HelpDesk24", "CallCenter Nord"]
"The demo's parties in the car-sharing value chain: a rental changes each one's totals."


# --- the floor: a plain WebSocket broadcast on the same stack --------------------------------------


def floor_app():
    """Starlette: WebSocket at /graphql (handshake as graphql-transport-ws, then one sender task per
    socket fed by a queue), POST /publish queues one message for every socket and answers."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    queues: set[asyncio.Queue] = set()
    sequence = 0

    def message(n: int) -> str:
        amount = {"amount": f"{n}.00", "currency": "EUR"}
        data = {"settlementUpdated": {"party": {"id": "UGFydHk6MQ==", "name": "MobilityHub"}, "period": "2026-11",
                                      "currency": "EUR", "receivable": amount, "payable": amount, "net": amount}}
        return json.dumps({"id": "1", "type": "next", "payload": {"data": data}})

    async def socket(websocket: WebSocket) -> None:
        await websocket.accept(subprotocol=PROTOCOL)
        await websocket.receive_text()  # connection_init
        await websocket.send_text(json.dumps({"type": "connection_ack"}))
        await websocket.receive_text()  # subscribe
        await websocket.send_text(message(sequence))
        queue: asyncio.Queue = asyncio.Queue(256)
        queues.add(queue)

        async def send() -> None:
            while True:
                await websocket.send_text(await queue.get())

        sender = asyncio.create_task(send())
        try:
            while True:
                await websocket.receive_text()
        except WebSocketDisconnect:
            pass
        finally:
            queues.discard(queue)
            sender.cancel()

    async def publish(request: Request) -> JSONResponse:
        nonlocal sequence
        await request.body()
        sequence += 1
        text = message(sequence)
        for queue in queues:
            queue.put_nowait(text)
        return JSONResponse({"data": {"recordUsage": {"accepted": 2, "rejected": 0}}})

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/healthz", healthz), Route("/publish", publish, methods=["POST"]),
                             WebSocketRoute("/graphql", socket)])


# --- the client ----------------------------------------------------------------------------------


class Subscribers:
    """N WebSocket clients in this process: each logs the arrival time of every `next` after its first."""

    def __init__(self, url: str, keys: list[str]) -> None:
        self.url = url
        self.keys = keys
        self.arrivals: list[list[float]] = [[] for _ in keys]
        self.ready = 0
        self.tasks: list[asyncio.Task] = []
        self.failures: list[str] = []
        self._changed = asyncio.Event()

    async def start(self, parallel: int = 25) -> None:
        gate = asyncio.Semaphore(parallel)
        self.tasks = [asyncio.create_task(self._run(i, key, gate)) for i, key in enumerate(self.keys)]
        deadline = time.monotonic() + 300
        while self.ready + len(self.failures) < len(self.keys):
            if time.monotonic() > deadline:
                raise RuntimeError(f"only {self.ready} of {len(self.keys)} subscribers ready")
            await asyncio.sleep(0.05)
        if self.failures:
            raise RuntimeError(f"{len(self.failures)} subscribers failed, e.g. {self.failures[0]}")

    async def _run(self, index: int, key: str, gate: asyncio.Semaphore) -> None:
        from websockets.asyncio.client import connect

        try:
            async with gate:
                ws = await connect(self.url, subprotocols=[PROTOCOL], open_timeout=60, ping_interval=None, max_queue=None)
                await ws.send(json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {key}"}}))
                assert json.loads(await ws.recv())["type"] == "connection_ack"
                await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIPTION}}))
                first = json.loads(await ws.recv())
                assert first["type"] == "next" and "errors" not in first["payload"], first
            self.ready += 1
            arrivals = self.arrivals[index]
            async for raw in ws:
                now = time.perf_counter()
                if '"next"' in raw:
                    arrivals.append(now)
                    self._changed.set()
                elif '"ping"' in raw:
                    await ws.send('{"type":"pong"}')
        except Exception as error:  # noqa: BLE001 - reported, the figure fails
            self.failures.append(repr(error))

    async def wait_for(self, count: int, timeout: float) -> int:
        """Until every subscriber has `count` arrivals (or timeout): how many have."""
        deadline = time.perf_counter() + timeout
        while True:
            have = sum(1 for a in self.arrivals if len(a) >= count)
            if have == len(self.arrivals) or time.perf_counter() > deadline:
                return have
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), 0.05)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def measure(ws_url: str, post, keys: list[str], rounds: int, gap: float) -> dict:
    """Open the subscribers, then `rounds` times: POST, note when its response arrived, wait for
    every subscriber's message. Latencies in ms, and how many deliveries were missed."""
    subscribers = Subscribers(ws_url, keys)
    started = time.perf_counter()
    await subscribers.start()
    setup = time.perf_counter() - started
    latencies: list[float] = []
    missed = 0
    slowest_round = []
    try:
        async with httpx.AsyncClient(timeout=30) as client:
            for r in range(rounds):
                await post(client, r)
                answered = time.perf_counter()
                have = await subscribers.wait_for(r + 1, 10.0)
                missed += len(keys) - have
                this_round = [(a[r] - answered) * 1000 for a in subscribers.arrivals if len(a) > r]
                latencies += this_round
                slowest_round.append(max(this_round) if this_round else float("nan"))
                await asyncio.sleep(gap)
        extra = sum(max(0, len(a) - rounds) for a in subscribers.arrivals)
    finally:
        await subscribers.stop()
    return {"latencies": latencies, "missed": missed, "extra": extra, "setup": setup, "slowest": slowest_round}


# --- the figure ----------------------------------------------------------------------------------


def _setup(workdir) -> tuple[dict[str, str], dict[str, str], str]:
    db = workdir / "subscriptions.db"
    env = {**os.environ, "SHAREFLOW_DATABASE_URL": f"sqlite+aiosqlite:///{db}"}
    env.pop("SHAREFLOW_REDIS_URL", None)  # one process, in-process pub/sub
    for command in (["migrate"], ["demo"]):
        subprocess.run([str(VENV_BIN / "shareflow"), *command], env=env, cwd=workdir, check=True,
                       stdout=subprocess.DEVNULL, timeout=120)
    keys = json.loads((workdir / "shareflow-demo-keys.json").read_text())
    with sqlite3.connect(db) as connection:
        (service_id,) = connection.execute("SELECT id FROM services WHERE name = 'Car sharing'").fetchone()
    from graph.ids import to_global_id

    return env, keys, to_global_id("Service", service_id)


def _summary(result: dict) -> tuple[float, float, float]:
    values = result["latencies"]
    return percentile(values, 50), percentile(values, 99), max(values)


async def _run(cfg: Config) -> Section:
    n = cfg.pick(1000, 100)
    rounds = cfg.pick(20, 5)
    gap = 0.3
    env, keys, service = _setup(cfg.workdir)
    subscriber_keys = [keys[CHAIN[i % len(CHAIN)]] for i in range(n)]
    provider = keys["CityCar"]

    # The floor first: the same client against the plain broadcast.
    with serve([sys.executable, "-m", "bench.subscriptions", "--floor", "--port", "{port}"],
               log=cfg.workdir / "floor.log") as floor:
        async def publish(client, r):
            (await client.post(floor.url + "/publish", json={"round": r})).raise_for_status()

        base = await measure(f"ws://127.0.0.1:{floor.port}/graphql", publish, subscriber_keys, rounds, gap)

    with serve([str(VENV_BIN / "shareflow"), "serve", "--port", "{port}"], env=env, cwd=cfg.workdir,
               log=cfg.workdir / "serve.log") as server:
        async def record(client, r):
            at = datetime.now(UTC).replace(microsecond=0).isoformat()
            events = [
                {"idempotencyKey": f"bench-{r}-m", "serviceId": service, "consumerRef": f"c{r % 10}", "metric": "minutes", "quantity": "30", "occurredAt": at},
                {"idempotencyKey": f"bench-{r}-r", "serviceId": service, "consumerRef": f"c{r % 10}", "metric": "rental", "quantity": "1", "occurredAt": at},
            ]
            response = await client.post(server.url + "/graphql", json={"query": RECORD, "variables": {"events": events}},
                                          headers={"Authorization": f"Bearer {provider}"})
            body = response.json()
            assert body.get("data", {}).get("recordUsage", {}).get("accepted") == 2, body

        real = await measure(f"ws://127.0.0.1:{server.port}/graphql", record, subscriber_keys, rounds, gap)

    p50, p99, worst = _summary(real)
    f50, f99, fworst = _summary(base)
    expected = n * rounds
    received = expected - real["missed"]
    met = "met" if p99 <= GOAL_P99_MS and real["missed"] == 0 else "**NOT met**"
    size = f"{n:,} subscribers × {rounds} updates"
    rows = [
        Row(
            "`settlementUpdated` fan-out, `recordUsage` response → delivery",
            size,
            f"p50 {fmt_ms(p50)}, p99 {fmt_ms(p99)}, max {fmt_ms(worst)}",
            f"plain WebSocket broadcast p50 {fmt_ms(f50)}, p99 {fmt_ms(f99)}",
            f"p99 ×{p99 / f99:.1f}" if f99 > 0 else "—",
            f"goal p99 ≤ {GOAL_P99_MS:.0f} ms: {met}; {received:,} of {expected:,} deliveries"
            + (f", {real['extra']} extra" if real["extra"] else ""),
        ),
        Row(
            "plain WebSocket broadcast (floor)",
            size,
            f"p50 {fmt_ms(f50)}, p99 {fmt_ms(f99)}, max {fmt_ms(fworst)}",
            "—",
            "100%",
            f"{expected - base['missed']:,} of {expected:,} deliveries",
        ),
    ]
    notes = [
        f"Subscribers opened and answered their first message in {real['setup']:.1f} s (floor {base['setup']:.1f} s).",
        "Slowest delivery per update (ms): " + ", ".join(f"{x:.0f}" for x in real["slowest"]) + ".",
        "Floor, slowest per update (ms): " + ", ".join(f"{x:.0f}" for x in base["slowest"]) + ".",
    ]
    method = (
        f"`shareflow serve` (one uvicorn worker, SQLite seeded by `shareflow demo`, in-process pub/sub) with {n:,} "
        f"WebSocket connections ({PROTOCOL}, one `settlementUpdated` subscription each, spread evenly over the "
        f"{len(CHAIN)} parties of the car-sharing value chain, each with its own party's key) opened by one client "
        "process (the `websockets` package) on 127.0.0.1. Each update is one `recordUsage` of a 30-minute rental "
        "(two events) by CityCar over HTTP, which changes all six parties' totals; the time runs from the moment "
        "the client has the mutation's response to the arrival of each subscriber's message, on one clock "
        f"(client-side `perf_counter`). {rounds} updates {gap:.1f} s apart, each waited for at every subscriber. "
        "Floor: `bench.subscriptions.floor_app`, a plain Starlette WebSocket endpoint under the same `uvicorn.run` "
        "settings, with the same handshake, subscriber count, client and message size, where a POST queues the "
        "message to every socket's sender task before answering. Percentiles are nearest-rank over all deliveries."
    )
    return Section(TITLE, method, rows, notes)


def run(cfg: Config):
    return _run(cfg)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--floor", action="store_true")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    import uvicorn

    uvicorn.run("bench.subscriptions:floor_app", factory=True, host="127.0.0.1", port=args.port, workers=1, log_level="info",
                ws_per_message_deflate=False)  # as `shareflow serve` by default


if __name__ == "__main__":
    main()

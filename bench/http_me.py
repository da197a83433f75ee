"""HTTP figure: an authenticated `{ me { party { id } } }` through `shareflow serve` against a plain
Starlette endpoint that returns the same bytes, both under the same uvicorn settings and wrk load."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx

from bench.common import BENCH_DIR, OUT_DIR, VENV_BIN, Config, Row, Section, cpu_seconds, fmt_int, median, serve, wrk

TITLE = "HTTP: authenticated `me` vs a plain Starlette endpoint"
QUERY = "{ me { party { id } } }"
CONNECTIONS = 32
RUNS = 3
GOAL = 0.40


def _seed(workdir, env) -> str:
    """A fresh migrated SQLite database with the demo network; returns the owner's API key."""
    for command in (["migrate"], ["demo"]):
        subprocess.run([str(VENV_BIN / "shareflow"), *command], env=env, cwd=workdir, check=True,
                       stdout=subprocess.DEVNULL, timeout=120)
    keys = json.loads((workdir / "shareflow-demo-keys.json").read_text())
    return keys["MobilityHub"]


def run(cfg: Config) -> Section:
    seconds = cfg.pick(10, 3)
    warmup = cfg.pick(2, 1)
    workdir = cfg.workdir / "http"
    workdir.mkdir()
    env = {**os.environ, "SHAREFLOW_DATABASE_URL": f"sqlite+aiosqlite:///{workdir / 'shareflow.db'}"}
    env.pop("SHAREFLOW_AUTH_CACHE_SECONDS", None)  # the default key cache, as deployed
    # The per-key rate limit stays on (its cost is part of every request) but far above this load:
    # a 429 is not an answer, and a bench that counted them would measure the limiter.
    env["SHAREFLOW_RATE_LIMIT_PER_MINUTE"] = str(10**9)
    key = _seed(workdir, env)
    auth = f"Bearer {key}"

    me_request = workdir / "me.json"
    me_request.write_text(json.dumps({"query": QUERY}))
    typename_request = workdir / "typename.json"
    typename_request.write_text(json.dumps({"query": "{ __typename }"}))
    body_file = workdir / "me-response.json"

    OUT_DIR.mkdir(exist_ok=True)
    shareflow_argv = [str(VENV_BIN / "shareflow"), "serve", "--host", "127.0.0.1", "--port", "{port}"]
    plain_argv = [sys.executable, "-m", "bench.plain_app", "--host", "127.0.0.1", "--port", "{port}"]
    script = BENCH_DIR / "post.lua"

    with serve(shareflow_argv, env=env, cwd=workdir, log=OUT_DIR / "http-shareflow.log") as app:
        answer = httpx.post(app.url + "/graphql", content=me_request.read_bytes(),
                            headers={"Content-Type": "application/json", "Authorization": auth}, timeout=10)
        answer.raise_for_status()
        assert answer.json()["data"]["me"]["party"]["id"], answer.text
        body_file.write_bytes(answer.content)

        plain_env = {**env, "SHAREFLOW_BENCH_BODY_FILE": str(body_file)}
        with serve(plain_argv, env=plain_env, log=OUT_DIR / "http-plain.log") as plain:
            same = httpx.post(plain.url + "/graphql", content=me_request.read_bytes(),
                              headers={"Content-Type": "application/json", "Authorization": auth}, timeout=10)
            assert same.content == answer.content, (same.content, answer.content)

            targets = {
                "plain": (plain, {"BENCH_BODY_FILE": str(me_request), "BENCH_AUTH": auth}),
                "me": (app, {"BENCH_BODY_FILE": str(me_request), "BENCH_AUTH": auth}),
                "typename": (app, {"BENCH_BODY_FILE": str(typename_request), "BENCH_AUTH": auth}),
            }
            results = {name: [] for name in targets}
            cpu = {name: [] for name in targets}
            for server, wrk_env in targets.values():  # warm-up, not counted
                wrk(server.url + "/graphql", connections=CONNECTIONS, seconds=warmup, script=script, env=wrk_env)
            for _ in range(RUNS):  # interleaved, so drift of the machine hits every target alike
                for name, (server, wrk_env) in targets.items():
                    before = cpu_seconds(server.proc.pid)
                    result = wrk(server.url + "/graphql", connections=CONNECTIONS, seconds=seconds, script=script, env=wrk_env)
                    results[name].append(result)
                    cpu[name].append((cpu_seconds(server.proc.pid) - before) / max(result.requests, 1))

    def rps(name):
        return median([r.requests_per_second for r in results[name]])

    def runs(name):
        return ", ".join(fmt_int(r.requests_per_second) for r in results[name])

    def p50(name):
        return median([r.latency_p50_ms for r in results[name] if r.latency_p50_ms is not None])

    def cpu_us(name):
        return median(cpu[name]) * 1e6

    bad = {name: sum(r.errors + r.non_2xx for r in rs) for name, rs in results.items()}
    floor = rps("plain")
    ratio = rps("me") / floor
    met = "met" if ratio >= GOAL and not bad["me"] else "NOT met"
    rows = [
        Row("HTTP `me` (authenticated)", f"wrk -c{CONNECTIONS}, {seconds}s ×{RUNS}", f"{fmt_int(rps('me'))} req/s",
            f"{fmt_int(floor)} req/s plain Starlette", f"{ratio:.1%}",
            f"goal ≥ {GOAL:.0%}: **{met}**; runs {runs('me')}; p50 {p50('me'):.1f} ms"),
        Row("HTTP `{ __typename }` (authenticated)", f"wrk -c{CONNECTIONS}, {seconds}s ×{RUNS}",
            f"{fmt_int(rps('typename'))} req/s", f"{fmt_int(floor)} req/s plain Starlette",
            f"{rps('typename') / floor:.1%}", f"runs {runs('typename')}; p50 {p50('typename'):.1f} ms"),
        Row("HTTP plain Starlette (floor)", f"wrk -c{CONNECTIONS}, {seconds}s ×{RUNS}", f"{fmt_int(floor)} req/s",
            "—", "100%", f"runs {runs('plain')}; p50 {p50('plain'):.1f} ms"),
        Row("HTTP `me`: server CPU per request", f"the runs above", f"{cpu_us('me'):.0f} µs",
            f"{cpu_us('plain'):.0f} µs plain Starlette", f"{cpu_us('plain') / cpu_us('me'):.1%}",
            f"`{{ __typename }}` {cpu_us('typename'):.0f} µs; the server process's user and system time over the "
            "requests it answered: less sensitive than req/s to other work on the machine"),
    ]
    notes = [f"{len(answer.content)}-byte response `{answer.content.decode()}` served by both."]
    if any(bad.values()):
        notes.append(f"**Errors or non-2xx responses seen**: {bad}")
    method = (
        f"`shareflow serve` (one uvicorn worker, SQLite on a fresh temporary file, `shareflow demo` seeded, the "
        f"default 2 s key cache, the per-key rate limit on but set far above the load) and `bench/plain_app.py` (same `uvicorn.run` settings, access log on, `gc.freeze()` at "
        f"start-up as the app does, returning "
        f"the same bytes) under `wrk -t1 -c{CONNECTIONS} -d{seconds}s` from 127.0.0.1 with `bench/post.lua` "
        f"(POST, JSON body, `Authorization: Bearer`), after a {warmup}s warm-up; median of {RUNS} interleaved runs. "
        "The `{ __typename }` row goes through the same GraphQL stack without touching a resolver."
    )
    return Section(TITLE, method, rows, notes)

"""Usage figures (issue 5): `recordUsage` over HTTP in batches of 1,000 on an empty period and on a
period already holding many events, and the bulk path `shareflow import-usage`, each beside two
floors measured in the same run: raw `sqlite3.executemany` of the same event rows in one
transaction, and a naive SQLModel insert of one row per transaction (AsyncSession)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import resource
import shutil
import sqlite3
import subprocess
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx

from bench.common import (OUT_DIR, SEED_CONSUMER_BLOCKS, VENV_BIN, Config, Row, Section, cpu_seconds, fmt_int, fmt_ms, median,
                          percentile, serve)

TITLE = "Usage: `recordUsage` over HTTP, the bulk import, and a loaded period"
BATCH = 1000
CONCURRENCY = 4
CONSUMERS = 1000
GOAL_HTTP = 15_000
GOAL_BULK = 50_000
GOAL_LOADED = 0.90
MUTATION = (
    "mutation Record($events: [UsageInput!]!) { recordUsage(events: $events) "
    "{ accepted duplicates rejected errors { code } results { index status errors { field code } } } }"
)


# --- the database --------------------------------------------------------------------------------


class Setup:
    """A migrated SQLite file with the demo network; events go to CityCar's car sharing."""

    def __init__(self, workdir) -> None:
        self.workdir = workdir
        self.db = workdir / "pristine.db"
        self.env = {**os.environ, "SHAREFLOW_DATABASE_URL": f"sqlite+aiosqlite:///{self.db}"}
        for command in (["migrate"], ["demo"]):
            subprocess.run([str(VENV_BIN / "shareflow"), *command], env=self.env, cwd=workdir, check=True,
                           stdout=subprocess.DEVNULL, timeout=120)
        keys = json.loads((workdir / "shareflow-demo-keys.json").read_text())
        self.key = keys["CityCar"]
        with sqlite3.connect(self.db) as db:
            self.service_id, self.network_id, self.merchant_id, zone = db.execute(
                "SELECT s.id, s.network_id, COALESCE(s.billed_by_id, s.provider_id), n.time_zone "
                "FROM services s JOIN networks n ON n.id = s.network_id WHERE s.name = 'Car sharing'"
            ).fetchone()
        from app.billing.periods import period_bounds, period_of
        from graph.ids import to_global_id

        self.service_gid = to_global_id("Service", self.service_id)
        self.now = datetime.now(UTC)
        self.period = period_of(self.now, zone)
        start, _ = period_bounds(self.period, zone)
        self.earliest = max(start, self.now - timedelta(hours=6))

    def copy(self, name: str):
        """A copy of the seeded database (the backup API: WAL content included)."""
        path = self.workdir / name
        with sqlite3.connect(self.db) as src, sqlite3.connect(path) as dst:
            src.backup(dst)
        dst.close()
        return path

    def env_for(self, path) -> dict[str, str]:
        return {**self.env, "SHAREFLOW_DATABASE_URL": f"sqlite+aiosqlite:///{path}"}


def events(setup: Setup, prefix: str, n: int, seed: int) -> list[dict]:
    """n API events: 3 in 4 `minutes` (up to 2 decimals), 1 in 4 `rental` (1), among CONSUMERS."""
    rng = random.Random(seed)
    span = int((setup.now - timedelta(seconds=1) - setup.earliest).total_seconds())
    out = []
    for i in range(n):
        rental = i % 4 == 3
        at = setup.earliest + timedelta(seconds=rng.randrange(max(span, 1)))
        out.append({
            "idempotencyKey": f"{prefix}-{i:09d}",
            "serviceId": setup.service_gid,
            "consumerRef": f"consumer-{rng.randrange(CONSUMERS):05d}",
            "metric": "rental" if rental else "minutes",
            "quantity": "1" if rental else str(Decimal(rng.randrange(1, 12_000)) / 100),
            "occurredAt": at.isoformat().replace("+00:00", "Z"),
        })
    return out


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def add_consumers(db: sqlite3.Connection, setup: Setup) -> dict[str, int]:
    now = _stamp(setup.now)
    db.executemany(
        "INSERT OR IGNORE INTO parties (network_id, kind, name, external_ref, billing_party_id, active, created_at) "
        "VALUES (?, 'CONSUMER', ?, ?, ?, 1, ?)",
        [(setup.network_id, ref, ref, setup.merchant_id, now) for ref in (f"consumer-{i:05d}" for i in range(CONSUMERS))],
    )
    return dict(db.execute("SELECT external_ref, id FROM parties WHERE kind = 'CONSUMER' AND network_id = ?", (setup.network_id,)))


def event_rows(setup: Setup, batch: list[dict], consumers: dict[str, int]) -> list[tuple]:
    """The usage_events rows the API stores for these events (quantities in millionths)."""
    recorded = _stamp(setup.now)
    return [
        (setup.network_id, setup.service_id, consumers[e["consumerRef"]], e["idempotencyKey"], e["metric"],
         int(Decimal(e["quantity"]) * 1_000_000),
         _stamp(datetime.fromisoformat(e["occurredAt"].replace("Z", "+00:00"))), setup.period, recorded)
        for e in batch
    ]


INSERT_EVENT = (
    "INSERT INTO usage_events (network_id, service_id, consumer_id, idempotency_key, metric, quantity, occurred_at, "
    "period, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _connect(path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def raw_floor(setup: Setup, batch: list[dict], name: str) -> float:
    """Rows/s of raw sqlite3.executemany of these events' rows in one transaction (WAL, NORMAL)."""
    path = setup.copy(name)
    db = _connect(path)
    try:
        db.execute("BEGIN")
        consumers = add_consumers(db, setup)
        db.execute("COMMIT")
        rows = event_rows(setup, batch, consumers)
        started = time.perf_counter()
        db.execute("BEGIN")
        db.executemany(INSERT_EVENT, rows)
        db.execute("COMMIT")
        return len(rows) / (time.perf_counter() - started)
    finally:
        db.close()


async def naive_floor(setup: Setup, batch: list[dict]) -> float:
    """Rows/s of a naive SQLModel insert: one AsyncSession, one row and one commit per event."""
    from app.db import create_engine, session_factory
    from models import UsageEvent

    path = setup.copy("naive.db")
    db = _connect(path)
    consumers = add_consumers(db, setup)
    db.close()
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    sessions = session_factory(engine)
    try:
        started = time.perf_counter()
        for e in batch:
            async with sessions() as session:
                session.add(UsageEvent(
                    network_id=setup.network_id, service_id=setup.service_id, consumer_id=consumers[e["consumerRef"]],
                    idempotency_key=e["idempotencyKey"], metric=e["metric"],
                    quantity=int(Decimal(e["quantity"]) * 1_000_000),
                    occurred_at=datetime.fromisoformat(e["occurredAt"].replace("Z", "+00:00")), period=setup.period,
                ))
                await session.commit()
        return len(batch) / (time.perf_counter() - started)
    finally:
        await engine.dispose()


def seed_period(setup: Setup, path, n: int) -> float:
    """n events straight into usage_events, with the usage lines, service usage and revenue that
    the running totals would hold for them (priced by the app's own pricing code). Seconds taken."""
    from app.billing.money import RoundingMode, currency_exponent, from_micros
    from app.billing.pricing import LineUsage, is_clamped, price_line
    from app.services.catalog import charge_from_json

    started = time.perf_counter()
    db = _connect(path)
    try:
        db.execute("BEGIN")
        consumers = add_consumers(db, setup)
        lines: dict[tuple[int, str], list[int]] = {}
        chunk = 100_000
        for start in range(0, n, chunk):
            rows = event_rows(setup, events(setup, "seed", min(chunk, n - start), seed=start), consumers)
            rows = [(*r[:3], f"seed-{start + i:09d}", *r[4:]) for i, r in enumerate(rows)]
            db.executemany(INSERT_EVENT, rows)
            for r in rows:
                totals = lines.setdefault((r[2], r[4]), [0, 0])
                totals[0] += 1
                totals[1] += r[5]
        db.execute(SEED_CONSUMER_BLOCKS)
        (plan,) = db.execute(
            "SELECT charges FROM price_plans WHERE service_id = ? AND effective_from <= ? AND "
            "(effective_to IS NULL OR effective_to > ?)", (setup.service_id, setup.period, setup.period)
        ).fetchone()
        charges = {c.metric: c for c in map(charge_from_json, json.loads(plan))}
        currency, mode = db.execute(
            "SELECT s.currency, n.rounding_mode FROM services s JOIN networks n ON n.id = s.network_id WHERE s.id = ?",
            (setup.service_id,),
        ).fetchone()
        exponent = currency_exponent(currency)
        revenue = 0
        line_rows = []
        usage: dict[str, list[int]] = {}
        for (consumer, metric), (count, quantity) in lines.items():
            assert not is_clamped(charges[metric])  # no min/max/mid counts to keep
            amount = price_line(charges[metric], LineUsage(count, from_micros(quantity)), exponent, RoundingMode(mode))
            revenue += amount
            line_rows.append((setup.network_id, setup.period, setup.service_id, consumer, metric, count, quantity, amount))
            u = usage.setdefault(metric, [0, 0])
            u[0] += count
            u[1] += quantity
        db.executemany(
            "INSERT INTO usage_lines (network_id, period, service_id, consumer_id, metric, events, quantity, min_events, "
            "max_events, mid_events, mid_quantity, amount) VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0, 0, 0, ?)", line_rows
        )
        db.executemany(
            "INSERT INTO service_usage (network_id, period, service_id, metric, events, quantity) VALUES (?, ?, ?, ?, ?, ?)",
            [(setup.network_id, setup.period, setup.service_id, m, c, q) for m, (c, q) in usage.items()],
        )
        db.execute(
            "INSERT INTO service_revenue (network_id, period, service_id, amount) VALUES (?, ?, ?, ?)",
            (setup.network_id, setup.period, setup.service_id, revenue),
        )
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    return time.perf_counter() - started


# --- load ----------------------------------------------------------------------------------------


def bodies(batch: list[dict]) -> list[bytes]:
    return [json.dumps({"query": MUTATION, "variables": {"events": batch[i : i + BATCH]}}).encode()
            for i in range(0, len(batch), BATCH)]


def _graphql_counts(answer: httpx.Response) -> dict | None:
    payload = (answer.json().get("data") or {}).get("recordUsage") if answer.status_code == 200 else None
    return None if payload is None or payload["errors"] else payload


def _ndjson_counts(answer: httpx.Response) -> dict | None:
    """The closing line of the endpoint's answer holds the counts."""
    return json.loads(answer.content.rstrip(b"\n").rsplit(b"\n", 1)[-1]) if answer.status_code == 200 else None


async def drive(url: str, key: str, payloads: list[bytes], content_type: str = "application/json",
                counts_of=_graphql_counts, pid: int | None = None) -> dict:
    """POST every body, CONCURRENCY at a time, from 127.0.0.1; returns counts and seconds, and the
    server's CPU seconds meanwhile when its `pid` is given."""
    assert url.startswith("http://127.0.0.1:"), url
    counts = {"accepted": 0, "duplicates": 0, "rejected": 0, "failed": 0}
    pending = iter(payloads)
    headers = {"Content-Type": content_type, "Authorization": f"Bearer {key}"}

    async def worker(client: httpx.AsyncClient) -> None:
        for body in pending:
            answered = counts_of(await client.post(url, content=body, headers=headers))
            if answered is None:
                counts["failed"] += 1
                continue
            for name in ("accepted", "duplicates", "rejected"):
                counts[name] += answered[name]

    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        cpu = cpu_seconds(pid) if pid else 0.0
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(CONCURRENCY)))
        counts["seconds"] = time.perf_counter() - started
        counts["cpu"] = cpu_seconds(pid) - cpu if pid else None
    counts["rate"] = counts["accepted"] / counts["seconds"]
    return counts


NDJSON_BATCH = 5000
"Lines per NDJSON request: the endpoint's own batch (one transaction per 5,000 lines)."


CONSUMER_PAGES = (
    "query Pages($c: ID, $s: ID, $p: String, $a: String) { usageEvents(consumerId: $c, serviceId: $s, period: $p, "
    "first: 100, after: $a) { edges { node { id quantity occurredAt } } pageInfo { hasNextPage endCursor } } }"
)


async def drive_reads(url: str, key: str, variables: list[dict]) -> dict[str, list[float]]:
    """Two pages of each consumer's events (the second after the first's cursor, if any), one request at
    a time, each followed by a `{ __typename }` with the same key: latencies in milliseconds."""
    headers = {"Authorization": f"Bearer {key}"}
    taken: dict[str, list[float]] = {"pages": [], "floor": []}
    async with httpx.AsyncClient(timeout=60) as client:
        async def timed(name: str, body: dict) -> dict:
            started = time.perf_counter()
            answer = await client.post(url, json=body, headers=headers)
            taken[name].append((time.perf_counter() - started) * 1000)
            answer.raise_for_status()
            payload = answer.json()
            if payload.get("errors"):
                raise RuntimeError(f"usageEvents failed: {payload['errors']}")
            return payload["data"]
        for one in variables:
            first = (await timed("pages", {"query": CONSUMER_PAGES, "variables": one}))["usageEvents"]
            await timed("floor", {"query": "{ __typename }"})
            if first["pageInfo"]["hasNextPage"]:
                await timed("pages", {"query": CONSUMER_PAGES, "variables": {**one, "a": first["pageInfo"]["endCursor"]}})
                await timed("floor", {"query": "{ __typename }"})
    return taken


def ndjson_bodies(batch: list[dict]) -> list[bytes]:
    return ["".join(json.dumps(e) + "\n" for e in batch[i : i + NDJSON_BATCH]).encode()
            for i in range(0, len(batch), NDJSON_BATCH)]


async def drive_ndjson(base: str, key: str, payloads: list[bytes], pid: int | None = None) -> dict:
    """`drive` for /usage.ndjson."""
    return await drive(base + "/usage.ndjson", key, payloads, "application/x-ndjson", _ndjson_counts, pid)


def cpu_per_event(runs: list[dict]) -> float:
    """The server's median CPU microseconds per accepted event over the runs: steadier than
    events/s on a shared machine, and 10^6 over it is what one core could take at that cost."""
    return median([c["cpu"] / c["accepted"] * 1e6 for c in runs if c["accepted"]])


def cpu_note(micros: float) -> str:
    return f"CPU {micros:.0f} µs/event (one core's ceiling {fmt_int(1e6 / micros)} events/s)"


# --- the figure ----------------------------------------------------------------------------------


def run(cfg: Config) -> Section:
    workdir = cfg.workdir / "usage"
    workdir.mkdir()
    rounds = cfg.pick(5, 3)  # interleaved rounds per server: the machine drifts by a fifth from one to the next
    per_round = cfg.pick(20, 6)  # batches of 1,000 per server and round
    loaded_n = cfg.pick(1_000_000, 100_000)
    bulk_n = cfg.pick(200_000, 50_000)
    naive_n = cfg.pick(2_000, 500)
    setup = Setup(workdir)
    notes = []

    seeded = setup.copy("loaded.db")
    seed_seconds = seed_period(setup, seeded, loaded_n)
    notes.append(f"Seeded {fmt_int(loaded_n)} events ({CONSUMERS} consumers × 2 metrics of lines, service usage "
                 f"and revenue consistent with them) by direct executemany in {seed_seconds:.1f} s.")
    empty = setup.copy("empty.db")
    with sqlite3.connect(seeded) as db:
        consumer_ids = [row[0] for row in db.execute("SELECT id FROM parties WHERE network_id = ? AND kind = 'CONSUMER' ORDER BY id", (setup.network_id,))]
    db.close()
    from graph.ids import to_global_id

    readers = random.Random(9).sample(consumer_ids, cfg.pick(100, 30))
    pages = [{"c": to_global_id("Party", c), "s": setup.service_gid, "p": setup.period} for c in readers]

    OUT_DIR.mkdir(exist_ok=True)
    argv = [str(VENV_BIN / "shareflow"), "serve", "--host", "127.0.0.1", "--port", "{port}"]
    results = {"empty": [], "loaded": []}
    all_events = {}
    with serve(argv, env=setup.env_for(empty), cwd=workdir, log=OUT_DIR / "usage-empty.log") as a, \
            serve(argv, env=setup.env_for(seeded), cwd=workdir, log=OUT_DIR / "usage-loaded.log") as b:
        servers = {"empty": a, "loaded": b}
        for name, server in servers.items():  # warm-up: one batch each, not counted
            warm = events(setup, f"warm-{name}", BATCH, seed=7)
            asyncio.run(drive(server.url + "/graphql", setup.key, bodies(warm)))
        for r in range(rounds):  # interleaved, so drift of the machine hits both alike; in turns first
            for name in (("empty", "loaded") if r % 2 == 0 else ("loaded", "empty")):
                server = servers[name]
                batch = events(setup, f"r{r}-{name}", per_round * BATCH, seed=100 + r)
                all_events.setdefault(name, []).extend(batch)
                results[name].append(asyncio.run(drive(server.url + "/graphql", setup.key, bodies(batch), pid=server.proc.pid)))
        # a re-sent batch: every item DUPLICATE, nothing written
        again = asyncio.run(drive(a.url + "/graphql", setup.key, bodies(all_events["empty"][:BATCH])))
        # the NDJSON endpoint on the same server: as many rounds of the same number of events
        ndjson = []
        for r in range(rounds):
            lot = events(setup, f"nd{r}", per_round * BATCH, seed=300 + r)
            ndjson.append(asyncio.run(drive_ndjson(a.url, setup.key, ndjson_bodies(lot), pid=a.proc.pid)))
        ndjson_again = asyncio.run(drive_ndjson(a.url, setup.key, ndjson_bodies(lot[:NDJSON_BATCH])))
        reads = asyncio.run(drive_reads(b.url + "/graphql", setup.key, pages))

    http_events = all_events["empty"]
    raw = raw_floor(setup, http_events, "floor-http.db")
    naive = asyncio.run(naive_floor(setup, http_events[:naive_n]))

    bulk = events(setup, "bulk", bulk_n, seed=42)
    bulk_file = workdir / "bulk.ndjson"
    bulk_file.write_text("".join(json.dumps(e) + "\n" for e in bulk))
    bulk_db = setup.copy("bulk.db")
    command = [str(VENV_BIN / "shareflow"), "import-usage", str(bulk_file), "--api-key", setup.key, "--no-progress"]
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, env=setup.env_for(bulk_db), cwd=workdir, capture_output=True, text=True, timeout=900)
    bulk_seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the command and its reader, start-up included
    bulk_cpu = (after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime) / bulk_n * 1e6
    if done.returncode != 0:
        raise RuntimeError(f"import-usage failed: {done.stderr[-2000:]}")
    report = json.loads(done.stdout)
    bulk_rate = report["accepted"] / bulk_seconds
    started = time.perf_counter()
    rerun = subprocess.run(command, env=setup.env_for(bulk_db), cwd=workdir, capture_output=True, text=True, timeout=900)
    rerun_seconds = time.perf_counter() - started
    rerun_report = json.loads(rerun.stdout)
    empty_file = workdir / "empty.ndjson"  # the command's fixed cost: start-up, the key checked, no rows
    empty_file.write_text("")
    started = time.perf_counter()
    subprocess.run([*command[:2], str(empty_file), *command[3:]], env=setup.env_for(bulk_db), cwd=workdir,
                   capture_output=True, check=True, timeout=120)
    startup_seconds = time.perf_counter() - started
    bulk_raw = raw_floor(setup, bulk, "floor-bulk.db")

    rate = {name: median([c["rate"] for c in runs]) for name, runs in results.items()}
    runs = {name: ", ".join(fmt_int(c["rate"]) for c in rs) for name, rs in results.items()}
    bad = {name: sum(c["failed"] + c["rejected"] + c["duplicates"] for c in rs) for name, rs in results.items()}
    size = f"{rounds}×{per_round} batches of {BATCH:,}, {CONCURRENCY} connections"
    floors = f"raw executemany {fmt_int(raw)} rows/s; naive SQLModel {fmt_int(naive)} rows/s"

    def met(ok: bool) -> str:
        return "**met**" if ok else "**NOT met**"

    # The loaded server against the empty one within each round, the two measured seconds apart:
    # the median of these ratios leaves out the machine's drift from one round to the next, which
    # a ratio of the two servers' medians (rounds apart) takes in.
    loaded_ratios = [loaded["rate"] / empty["rate"] for loaded, empty in zip(results["loaded"], results["empty"])]
    loaded_ratio = median(loaded_ratios)
    ndjson_rate = median([c["rate"] for c in ndjson])
    bad["ndjson"] = sum(c["failed"] + c["rejected"] + c["duplicates"] for c in ndjson)
    rows = [
        Row("`recordUsage` HTTP, empty period", size, f"{fmt_int(rate['empty'])} events/s", floors,
            f"{rate['empty'] / raw:.1%} of raw; ×{rate['empty'] / naive:.1f} naive",
            f"goal ≥ {GOAL_HTTP:,}: {met(rate['empty'] >= GOAL_HTTP)}; runs {runs['empty']}; server {cpu_note(cpu_per_event(results['empty']))}"),
        Row(f"`recordUsage` HTTP, {fmt_int(loaded_n)} events already in the period", size,
            f"{fmt_int(rate['loaded'])} events/s", f"{fmt_int(rate['empty'])} events/s empty period (same run)",
            f"{loaded_ratio:.1%}", f"goal ≥ {GOAL_LOADED:.0%}: {met(loaded_ratio >= GOAL_LOADED)} (the median of the rounds' "
            f"ratios {', '.join(f'{ratio:.1%}' for ratio in loaded_ratios)}; the medians' ratio {rate['loaded'] / rate['empty']:.1%}); "
            f"runs {runs['loaded']}; server {cpu_note(cpu_per_event(results['loaded']))}"),
        Row("`POST /usage.ndjson` HTTP", f"{rounds}×{fmt_int(per_round * BATCH)} events in bodies of {NDJSON_BATCH:,} lines, "
            f"{CONCURRENCY} connections", f"{fmt_int(ndjson_rate)} events/s", f"{fmt_int(raw)} rows/s raw executemany",
            f"{ndjson_rate / raw:.1%} of raw; ×{ndjson_rate / rate['empty']:.2f} recordUsage",
            f"runs {', '.join(fmt_int(c['rate']) for c in ndjson)}; server {cpu_note(cpu_per_event(ndjson))}; re-sent body of {NDJSON_BATCH:,}: "
            f"{ndjson_again['duplicates']:,} duplicates in {ndjson_again['seconds'] * 1000:.0f} ms"),
        Row("`shareflow import-usage` (NDJSON)", f"{fmt_int(bulk_n)} events", f"{fmt_int(bulk_rate)} events/s",
            f"raw executemany {fmt_int(bulk_raw)} rows/s (same rows)", f"{bulk_rate / bulk_raw:.1%} of raw",
            f"goal ≥ {GOAL_BULK:,}: {met(bulk_rate >= GOAL_BULK)}; {bulk_seconds:.1f} s wall-clock including start-up "
            f"({startup_seconds:.2f} s on an empty file: {fmt_int(bulk_n / (bulk_seconds - startup_seconds))} events/s beyond it); CPU {bulk_cpu:.0f} µs/event (the command and its reader); "
            f"re-run {rerun_seconds:.1f} s ({fmt_int(rerun_report['duplicates'])} duplicates)"),
        Row("`usageEvents` by consumer, service and period", f"{fmt_int(loaded_n)} events in the period, {len(pages)} consumers, {len(reads['pages'])} pages of up to 100",
            f"p50 {fmt_ms(percentile(reads['pages'], 50))}, p99 {fmt_ms(percentile(reads['pages'], 99))}",
            f"`{{ __typename }}` p50 {fmt_ms(percentile(reads['floor'], 50))}, p99 {fmt_ms(percentile(reads['floor'], 99))}",
            f"p50 ×{percentile(reads['pages'], 50) / percentile(reads['floor'], 50):.1f}",
            "the loaded server after its runs; each consumer holds about 1/1,000 of the period's events, in every block of ids"),
        Row("raw `sqlite3.executemany` (floor)", f"{fmt_int(len(http_events))} rows, one transaction",
            f"{fmt_int(raw)} rows/s", "—", "100%", "the HTTP run's event rows into usage_events"),
        Row("naive SQLModel insert (floor)", f"{fmt_int(naive_n)} rows, one per transaction", f"{fmt_int(naive)} rows/s",
            "—", f"{naive / raw:.1%} of raw", "AsyncSession, `add` + `commit` per event, in-process"),
    ]
    notes.append(f"Re-sent batch of {BATCH:,}: {again['duplicates']:,} DUPLICATE, {again['accepted']} accepted, "
                 f"{again['seconds'] * 1000:.0f} ms.")
    notes.append(f"import-usage report: {report['accepted']:,} accepted, {report['duplicates']} duplicates, "
                 f"{report['rejected']} rejected; re-run: {rerun_report['accepted']} accepted, "
                 f"{rerun_report['duplicates']:,} duplicates.")
    if any(bad.values()) or report["accepted"] != bulk_n or rerun_report["duplicates"] != bulk_n:
        notes.append(f"**Unexpected outcomes** (failed, rejected or duplicate items in the measured runs): {bad}")
    method = (
        f"`shareflow serve` (one uvicorn worker) on two copies of a SQLite file seeded by `shareflow demo`: one with an "
        f"empty period, one with {fmt_int(loaded_n)} events already in the current period. Events go to CityCar's car "
        f"sharing (PER_UNIT `minutes` with 2-decimal quantities, 3 in 4; FLAT `rental`, 1 in 4), spread over "
        f"{CONSUMERS:,} consumer references, keys `<prefix>-<sequence>`, times within the last hours of the period. "
        f"An httpx client on 127.0.0.1 POSTs pre-encoded batches of {BATCH:,} with {CONCURRENCY} connections, selecting "
        f"`accepted duplicates rejected errors {{ code }} results {{ index status errors {{ field code }} }}`; after a "
        f"one-batch warm-up, {rounds} interleaved rounds of {per_round} batches per server (the empty period's "
        f"server first in even rounds, the loaded one in odd ones); the median round is reported, and the loaded "
        f"period as the median of the rounds' loaded/empty ratios. Then, on the same server, `POST /usage.ndjson` with the same kind of events in bodies of "
        f"{NDJSON_BATCH:,} lines ({CONCURRENCY} connections, {rounds} rounds of {fmt_int(per_round * BATCH)} events, median). Then, on the loaded server, two pages of 100 of `usageEvents(consumerId, serviceId, period)` (the second after the first's cursor) for each of {len(pages)} random seeded consumers, one request at a time, each followed by a `{{ __typename }}` as its floor (nearest-rank percentiles). Bulk: `shareflow import-usage FILE.ndjson` on a fresh copy, wall-clock of the whole command. "
        f"Floors: raw `sqlite3.executemany` of the same usage_events rows in one transaction (WAL, synchronous=NORMAL, "
        f"events only: no consumers, no running totals) and a naive SQLModel AsyncSession insert of one row per "
        f"transaction. CPU per event: the server process's user and system time (/proc) over the measured runs, "
        f"divided by the events they accepted (median run); for the import, the command's and its reader's "
        f"(RUSAGE_CHILDREN), start-up included."
    )
    shutil.rmtree(workdir, ignore_errors=True)
    return Section(TITLE, method, rows, notes)

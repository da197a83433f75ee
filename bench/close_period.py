"""Settlement figure (issue 6): `closePeriod` on a loaded period (1,000,000 events, 10,000 consumers,
20 services, 40 agreements), in-process and as `shareflow close-period` in a subprocess for its
peak memory, beside a plain `GROUP BY` over the same events measured in the same run."""

from __future__ import annotations

import asyncio
import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

from bench.common import SEED_CONSUMER_BLOCKS, VENV_BIN, Config, Row, Section, fmt_int, median

TITLE = "Settlement: `closePeriod` on a loaded period"
SERVICES = 20
PROVIDERS = 5
PARTNERS = 5
SERVICES_PER_CONSUMER = (1, 5)
"Each consumer uses between 1 and 5 of the services (3 on average), both metrics of each."
GOAL_SECONDS = 5.0
GOAL_MB = 500
ROUNDS = 3
GROUP_BY = "SELECT service_id, consumer_id, metric, count(*), sum(quantity) FROM usage_events GROUP BY 1, 2, 3"


def last_month(now: datetime) -> str:
    first_of_month = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return (first_of_month - timedelta(days=1)).strftime("%Y-%m")


def _connect(path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    return db


def copy(src_path, dst_path):
    """A copy of a SQLite file (the backup API: WAL content included)."""
    with sqlite3.connect(src_path) as src, sqlite3.connect(dst_path) as dst:
        src.backup(dst)
    dst.close()
    return dst_path


# --- the network, through the app's own services -------------------------------------------------


async def build_network(url: str, period: str) -> dict:
    """A network whose first period is `period` (last month): PROVIDERS providers, PARTNERS partners,
    SERVICES services billed by the owner (PER_UNIT `minutes`, FLAT `rental`), and two agreements
    per service in force from `period`: the owner pays the provider a PERCENT share and a partner
    a PER_UNIT share of the minutes."""
    from app.auth import OPERATOR, Principal
    from app.billing.pricing import Charge, ChargeModel
    from app.billing.waterfall import ShareKind
    from app.migrate import upgrade
    from app.runtime import Runtime
    from app.services import catalog, networks, parties
    from app.services.agreements import AgreementDraft, RuleDraft, add_agreement
    from app.settings import Settings

    rt = Runtime.from_settings(Settings(database_url=url))
    try:
        await upgrade(rt.engine)
        created = await networks.create_network(rt, OPERATOR, name="Bench", currency="EUR", owner_name="Owner",
                                                first_period=period)
        owner = Principal(created.network.id, created.owner.id, "OWNER")

        async def onboard(name: str, kind: str):
            return (await parties.onboard_partner(rt, owner, name=name, kind=kind, external_ref=None, agreements=[],
                                                  issue_api_key=False)).party

        providers = [await onboard(f"Provider {i}", "PROVIDER") for i in range(PROVIDERS)]
        partners = [await onboard(f"Partner {i}", "PARTNER") for i in range(PARTNERS)]
        services = []
        agreements = 0
        for i in range(SERVICES):
            provider = providers[i % PROVIDERS]
            charges = [
                Charge(metric="minutes", model=ChargeModel.PER_UNIT, unit_price=D("0.29") + D(i) / 100),
                Charge(metric="rental", model=ChargeModel.FLAT, unit_price=D("1.00")),
            ]
            service, _ = await catalog.create_service(rt, owner, name=f"Service {i:02d}", provider_id=provider.id,
                                                      billed_by_id=None, currency=None, charges=charges)
            services.append(service)
            rules = [
                (provider, RuleDraft(ShareKind.PERCENT, percent=D(70 + i % 15))),
                (partners[i % PARTNERS], RuleDraft(ShareKind.PER_UNIT, amount=D("0.005"), metric="minutes")),
            ]
            for payee, rule in rules:
                await add_agreement(rt, owner, AgreementDraft(service_id=service.id, payee_id=payee.id,
                                                              effective_from=period, rule=rule))
                agreements += 1
        return {
            "network_id": created.network.id, "owner_id": created.owner.id, "owner_key": created.owner_key,
            "services": [s.id for s in services], "agreements": agreements,
        }
    finally:
        await rt.close()


# --- the usage, straight into the tables ---------------------------------------------------------


def seed_usage(path, net: dict, period: str, n_events: int, n_consumers: int) -> dict:
    """n_events events of n_consumers consumers straight into usage_events, with the usage lines,
    service usage and revenue the running totals would hold for them (lines priced by the app's
    own pricing code). Each consumer uses 1 to 5 services; 3 events in 4 are `minutes` (2-decimal
    quantities), 1 in 4 a `rental`; times spread over the period."""
    from app.billing.money import RoundingMode, currency_exponent, from_micros
    from app.billing.periods import period_bounds
    from app.billing.pricing import LineUsage, is_clamped, price_line
    from app.services.catalog import charge_from_json

    rng = random.Random(6)
    db = _connect(path)
    try:
        zone, mode = db.execute("SELECT time_zone, rounding_mode FROM networks WHERE id = ?", (net["network_id"],)).fetchone()
        start, end = period_bounds(period, zone)
        span = int((end - start).total_seconds()) - 1
        stamps = [(start + timedelta(seconds=rng.randrange(span))).astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
                  for _ in range(4096)]
        recorded = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO parties (network_id, kind, name, external_ref, billing_party_id, active, created_at) "
            "VALUES (?, 'CONSUMER', ?, ?, ?, 1, ?)",
            [(net["network_id"], f"consumer-{i:05d}", f"consumer-{i:05d}", net["owner_id"], recorded) for i in range(n_consumers)],
        )
        consumers = [row[0] for row in db.execute(
            "SELECT id FROM parties WHERE network_id = ? AND kind = 'CONSUMER' ORDER BY id", (net["network_id"],))]
        uses = [rng.sample(net["services"], rng.randint(*SERVICES_PER_CONSUMER)) for _ in consumers]
        lines: dict[tuple[int, int, str], list[int]] = {}
        chunk = 100_000
        for first in range(0, n_events, chunk):
            rows = []
            for i in range(first, min(first + chunk, n_events)):
                c = rng.randrange(n_consumers)
                service = rng.choice(uses[c])
                if i % 4 == 3:
                    metric, quantity = "rental", 1_000_000
                else:
                    metric, quantity = "minutes", rng.randrange(1, 12_000) * 10_000
                rows.append((net["network_id"], service, consumers[c], f"seed-{i:09d}", metric, quantity,
                             stamps[i & 4095], period, recorded))
                totals = lines.get((service, consumers[c], metric))
                if totals is None:
                    lines[(service, consumers[c], metric)] = [1, quantity]
                else:
                    totals[0] += 1
                    totals[1] += quantity
            db.executemany(
                "INSERT INTO usage_events (network_id, service_id, consumer_id, idempotency_key, metric, quantity, "
                "occurred_at, period, recorded_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        db.execute(SEED_CONSUMER_BLOCKS)
        plans = {}
        for service, charges in db.execute(
            "SELECT service_id, charges FROM price_plans WHERE network_id = ? AND effective_from <= ? AND "
            "(effective_to IS NULL OR effective_to > ?)", (net["network_id"], period, period)
        ):
            plans[service] = {c.metric: c for c in map(charge_from_json, json.loads(charges))}
        currency = dict(db.execute("SELECT id, currency FROM services WHERE network_id = ?", (net["network_id"],)))
        line_rows = []
        usage: dict[tuple[int, str], list[int]] = {}
        revenue: dict[int, int] = {}
        for (service, consumer, metric), (count, quantity) in lines.items():
            charge = plans[service][metric]
            assert not is_clamped(charge)  # no min/max/mid counts to keep
            amount = price_line(charge, LineUsage(count, from_micros(quantity)), currency_exponent(currency[service]),
                                RoundingMode(mode))
            revenue[service] = revenue.get(service, 0) + amount
            line_rows.append((net["network_id"], period, service, consumer, metric, count, quantity, amount))
            u = usage.setdefault((service, metric), [0, 0])
            u[0] += count
            u[1] += quantity
        db.executemany(
            "INSERT INTO usage_lines (network_id, period, service_id, consumer_id, metric, events, quantity, min_events, "
            "max_events, mid_events, mid_quantity, amount) VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0, 0, 0, ?)", line_rows)
        db.executemany(
            "INSERT INTO service_usage (network_id, period, service_id, metric, events, quantity) VALUES (?, ?, ?, ?, ?, ?)",
            [(net["network_id"], period, s, m, c, q) for (s, m), (c, q) in usage.items()])
        db.executemany(
            "INSERT INTO service_revenue (network_id, period, service_id, amount) VALUES (?, ?, ?, ?)",
            [(net["network_id"], period, s, a) for s, a in revenue.items()])
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    payers = {(s, c) for (s, c, _m) in lines}
    return {"lines": len(line_rows), "payments": len(payers), "revenue": sum(revenue.values()),
            "consumers_paying": len({c for (_s, c) in payers})}


# --- the floor and the measurements -------------------------------------------------------------


def group_by_seconds(path) -> tuple[float, int]:
    db = sqlite3.connect(path)
    try:
        started = time.perf_counter()
        rows = db.execute(GROUP_BY).fetchall()
        return time.perf_counter() - started, len(rows)
    finally:
        db.close()


async def close_in_process(url: str, network_id: int, owner_id: int, period: str) -> tuple[float, int]:
    from app.auth import Principal
    from app.runtime import Runtime
    from app.services.closing import close_period
    from app.settings import Settings

    rt = Runtime.from_settings(Settings(database_url=url))
    try:
        async with rt.sessions() as session:  # connect (and run the PRAGMAs) outside the measurement
            await session.connection()
        started = time.perf_counter()
        _, count = await close_period(rt, Principal(network_id, owner_id, "OWNER"), period)
        return time.perf_counter() - started, count
    finally:
        await rt.close()


LAUNCHER = """
import os, subprocess, sys
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}")
"""


def run_child(argv: list[str], env: dict, cwd) -> tuple[float, float, int, str, str]:
    """Run argv as a grandchild through a small launcher; (wall seconds, its own peak RSS in MB, return
    code, stdout, stderr). The peak is ru_maxrss of that one process (wait4's rusage, what
    RUSAGE_CHILDREN reports in the launcher, which has no other child). Not a direct child of
    this process: Linux carries the parent's peak into a child across fork (vfork) and exec, and
    this process holds the seeded totals."""
    out_path, err_path, usage_path = cwd / "child.out", cwd / "child.err", cwd / "child.usage"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", LAUNCHER, str(usage_path), *argv], env=env, cwd=cwd, stdout=out, stderr=err,
                       check=True, timeout=600)
        seconds = time.perf_counter() - started
    code, maxrss_kb = map(int, usage_path.read_text().split())
    return seconds, maxrss_kb / 1024, code, out_path.read_text(), err_path.read_text()


def books(path, network_id: int, period: str) -> dict:
    db = sqlite3.connect(path)
    try:
        one = lambda sql, *args: db.execute(sql, args).fetchone()[0]
        return {
            "statements": one("SELECT count(*) FROM statements WHERE network_id = ? AND period = ?", network_id, period),
            "entries": one("SELECT count(*) FROM ledger_entries WHERE network_id = ? AND booked_period = ?", network_id, period),
            "lines": one("SELECT count(*) FROM statement_lines WHERE network_id = ?", network_id),
            "charges": one("SELECT count(*) FROM statement_charges WHERE network_id = ?", network_id),
            "paid": one("SELECT sum(l.amount) FROM ledger_entries l JOIN parties p ON p.id = l.payer_id "
                        "WHERE l.network_id = ? AND p.kind = 'CONSUMER'", network_id),
            "last": one("SELECT max(number) FROM statements WHERE network_id = ? AND period = ?", network_id, period),
        }
    finally:
        db.close()


def run(cfg: Config) -> Section:
    workdir = cfg.workdir / "close_period"
    workdir.mkdir()
    n_events = cfg.pick(1_000_000, 100_000)
    n_consumers = cfg.pick(10_000, 1_000)
    period = last_month(datetime.now(UTC))
    pristine = workdir / "pristine.db"
    url = lambda path: f"sqlite+aiosqlite:///{path}"

    started = time.perf_counter()
    net = asyncio.run(build_network(url(pristine), period))
    build_seconds = time.perf_counter() - started
    started = time.perf_counter()
    seeded = seed_usage(pristine, net, period, n_events, n_consumers)
    seed_seconds = time.perf_counter() - started

    # The floor: a plain GROUP BY over the same events, on the same file, median of ROUNDS.
    floors = []
    for _ in range(ROUNDS):
        seconds, groups = group_by_seconds(pristine)
        floors.append(seconds)
    floor = median(floors)

    # In-process: close_period on a fresh copy per round.
    closes, counts = [], set()
    for r in range(ROUNDS):
        path = copy(pristine, workdir / f"close-{r}.db")
        seconds, count = asyncio.run(close_in_process(url(path), net["network_id"], net["owner_id"], period))
        closes.append(seconds)
        counts.add(count)
        last = path
    measured = median(closes)
    result = books(last, net["network_id"], period)
    for r in range(ROUNDS - 1):
        os.remove(workdir / f"close-{r}.db")

    # A subprocess: `shareflow close-period`, wall-clock and its peak RSS; a baseline child that
    # starts, authenticates and is refused (a period before the first) gives the start-up's share.
    env = {**os.environ, "SHAREFLOW_DATABASE_URL": url(copy(pristine, workdir / "cli.db"))}
    cli = [str(VENV_BIN / "shareflow"), "close-period"]
    base_seconds, base_mb, base_rc, _, base_err = run_child([*cli, "2000-01", "--api-key", net["owner_key"]], env, workdir)
    cli_seconds, cli_mb, rc, out, err = run_child([*cli, period, "--api-key", net["owner_key"]], env, workdir)
    if rc != 0:
        raise RuntimeError(f"shareflow close-period failed ({rc}): {err[-2000:]}")
    if base_rc != 2 or "BEFORE_FIRST_PERIOD" not in base_err:
        raise RuntimeError(f"baseline child did not stop as expected ({base_rc}): {base_err[-1000:]}")
    cli_count = json.loads(out)["statementCount"]

    expected = seeded["consumers_paying"] + 1 + PROVIDERS + PARTNERS
    problems = []
    if counts != {expected} or cli_count != expected or result["statements"] != expected:
        problems.append(f"statements: in-process {sorted(counts)}, CLI {cli_count}, stored {result['statements']}, "
                        f"expected {expected}")
    if result["paid"] != seeded["revenue"]:
        problems.append(f"consumers' payments booked {result['paid']} != revenue seeded {seeded['revenue']}")
    if result["last"] != f"ST-{period}-{expected:06d}":
        problems.append(f"last number {result['last']}")

    def met(ok: bool) -> str:
        return "**met**" if ok else "**NOT met**"

    size = f"{fmt_int(n_events)} events, {fmt_int(n_consumers)} consumers, {SERVICES} services, {net['agreements']} agreements"
    runs = ", ".join(f"{s:.2f}" for s in closes)
    rows = [
        Row("`closePeriod` in-process (`close_period`)", size, f"{measured:.2f} s",
            f"`GROUP BY` {floor:.2f} s ({fmt_int(groups)} groups)", f"×{measured / floor:.1f}",
            f"goal ≤ {GOAL_SECONDS:.0f} s: {met(measured <= GOAL_SECONDS)}; runs {runs} s; {fmt_int(expected)} statements"),
        Row("`shareflow close-period` (subprocess)", size, f"{cli_seconds:.2f} s, peak RSS {cli_mb:.0f} MB",
            f"start-up and refusal {base_seconds:.2f} s, {base_mb:.0f} MB", f"RSS ×{cli_mb / base_mb:.1f}",
            f"goal < {GOAL_MB} MB: {met(cli_mb < GOAL_MB)}; wall-clock including start-up"),
        Row("plain `GROUP BY` over the events (floor)", f"{fmt_int(n_events)} events", f"{floor:.2f} s", "—", "100%",
            "runs " + ", ".join(f"{s:.2f}" for s in floors) + " s; sqlite3, fetchall"),
    ]
    notes = [
        (f"Built the network through the app's services in {build_seconds:.1f} s; seeded {fmt_int(n_events)} events, "
        f"{fmt_int(seeded['lines'])} usage lines, service usage and revenue (priced with the app's own `price_line`) "
        f"by direct executemany in {seed_seconds:.1f} s."),
        (f"One close writes {fmt_int(result['entries'])} ledger entries, {fmt_int(result['statements'])} statements "
        f"(last {result['last']}), {fmt_int(result['lines'])} statement lines and {fmt_int(result['charges'])} "
        f"charges; consumers' payments booked sum to the revenue seeded ({result['paid']:,} minor units)."),
    ]
    if problems:
        notes.append("**Unexpected outcomes**: " + "; ".join(problems))
    method = (
        f"A SQLite file (WAL) with a network built through the app's own services (`create_network` with its first "
        f"period last month, {PROVIDERS} providers, {PARTNERS} partners, {SERVICES} services billed by the owner with a "
        f"PER_UNIT `minutes` and a FLAT `rental` charge, and per service two agreements in force from last month: a "
        f"PERCENT share to the provider and a PER_UNIT share of the minutes to a partner); then last month's usage "
        f"straight into the tables: {fmt_int(n_consumers)} consumers, each using {SERVICES_PER_CONSUMER[0]} to "
        f"{SERVICES_PER_CONSUMER[1]} of the services, {fmt_int(n_events)} events (3 in 4 `minutes`, 1 in 4 `rental`) "
        f"with the usage lines, service usage and revenue the running totals would hold. Measured: "
        f"`app.services.closing.close_period` in-process on a fresh copy of the file per run (engine connected "
        f"beforehand; median of {ROUNDS}), and `shareflow close-period PERIOD --api-key KEY` as a child process on "
        f"another copy, wall-clock and peak RSS (`ru_maxrss` of that process alone, from `os.wait4` in a small launcher, "
        f"so that the benchmark's own peak is not carried into it across fork and exec); its baseline is the same "
        f"command refused for a period before the first (imports, engine, authentication). Floor: `{GROUP_BY}` with "
        f"sqlite3 on the same file, all rows fetched, median of {ROUNDS}."
    )
    return Section(TITLE, method, rows, notes)

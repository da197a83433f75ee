"""Usage recorded at full speed over HTTP while `shareflow serve` is killed with SIGKILL at random
moments and restarted on the same database: every event the server acknowledged is stored exactly
once, nothing is half-written (the running totals equal a recomputation from the raw events) and
the books balance.

Clients behave as a real integrator: batches of unique idempotency keys, and a batch whose answer
did not arrive (connection reset, refused, 5xx, 429) is sent again as it was, until it is answered.
"""

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal as D
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from app.auth import authenticate
from app.billing.money import RoundingMode, currency_exponent, from_micros, to_micros
from app.billing.pricing import price_line, usage_of
from app.billing.waterfall import MetricUsage, split_service
from app.runtime import Runtime
from app.services import catalog, settlement
from app.services.agreements import agreements_in_force, leg_of
from app.settings import Settings
from graph.ids import decode_id
from models import (
    Network,
    Party,
    Service,
    ServiceRevenue,
    ServiceUsage,
    UsageEvent,
    UsageLine,
)
from tests.conftest import POSTGRES_URL, _drop_postgres_database, _postgres_database
from tests.servers import free_port

SHAREFLOW = str(Path(sys.executable).parent / "shareflow")
CAR_SHARING = "U2VydmljZTox"
CLIENTS = 3
BATCH = 200
CONSUMERS = 40
MAX_BATCHES = 300
"Per client: the load stops by itself even if the kill loop never told it to."
TRAFFIC_AFTER_LAST_RESTART = 1.0
LOAD_DEADLINE = 90.0
"""Seconds from the start of the load after which a client gives up, answered or not (a safety net:
a run takes 15-35 s, most of it servers starting again)."""
GRACE = 15.0
"Seconds a client has, once told to stop, to get its last batch answered."

RECORD = """
mutation($events: [UsageInput!]!) {
  recordUsage(events: $events) {
    accepted duplicates rejected
    errors { code message }
    results { index status errors { code message } }
  }
}"""


@dataclass
class Tally:
    """What the clients saw, shared by their threads (guarded by `lock`)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    sent: dict[str, dict] = field(default_factory=dict)
    "Every event sent at least once, by key."
    acknowledged: set[str] = field(default_factory=set)
    "Keys answered ACCEPTED or DUPLICATE in a response that arrived."
    answered_batches: int = 0
    unanswered_batches: list[str] = field(default_factory=list)
    "Batches given up at the deadline (their first key)."
    lost_responses: int = 0
    "Requests that reached a server which died before answering."
    refused: int = 0
    other_failures: Counter = field(default_factory=Counter)
    committed_before_kill: int = 0
    "Batches whose answer was lost but whose retry found them stored (all DUPLICATE)."
    rolled_back_by_kill: int = 0
    "Batches whose answer was lost and whose retry stored them (all ACCEPTED)."
    problems: list[str] = field(default_factory=list)
    finish_by: float = float("inf")
    "Set with the stop: when a client stops retrying its last batch."


def make_batch(rng: random.Random, client: int, number: int) -> list[dict]:
    now = datetime.now(UTC).isoformat()
    events = []
    for i in range(BATCH):
        metric = rng.choice(["minutes", "minutes", "rental"])
        quantity = D(rng.randint(1, 12_000)).scaleb(-2) if metric == "minutes" else D(1)
        events.append({
            "idempotencyKey": f"crash-{client}-{number}-{i}",
            "serviceId": CAR_SHARING,
            "consumerRef": f"driver-{rng.randint(1, CONSUMERS)}",
            "metric": metric,
            "quantity": str(quantity),
            "occurredAt": now,
        })
    return events


def load(url: str, key: str, client: int, seed: int, stop: threading.Event, abort: threading.Event, deadline: float,
         tally: Tally) -> None:
    """Send batches until `stop`; each batch is retried with the same keys until answered (or
    `abort`, or the deadline)."""
    rng = random.Random(seed * 100 + client)
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=15) as http:
        for number in range(MAX_BATCHES):
            if stop.is_set() or time.monotonic() > deadline:
                return
            events = make_batch(rng, client, number)
            with tally.lock:
                tally.sent.update((e["idempotencyKey"], e) for e in events)
            lost = False
            while True:
                if abort.is_set():
                    return
                if time.monotonic() > min(deadline, tally.finish_by):
                    with tally.lock:
                        tally.unanswered_batches.append(events[0]["idempotencyKey"])
                    return
                try:
                    response = http.post("/graphql", json={"query": RECORD, "variables": {"events": events}})
                except httpx.ConnectError:
                    with tally.lock:
                        tally.refused += 1
                    time.sleep(0.05)
                    continue
                except httpx.TransportError as error:  # the server died with our request
                    with tally.lock:
                        tally.lost_responses += 1
                        tally.other_failures[type(error).__name__] += 1
                    lost = True
                    time.sleep(0.05)
                    continue
                payload = None
                if response.status_code == 200:
                    body = response.json()
                    payload = (body.get("data") or {}).get("recordUsage")
                    if payload is None:
                        codes = [e.get("extensions", {}).get("code", e.get("message")) for e in body.get("errors", [])]
                        with tally.lock:
                            tally.other_failures[f"graphql error {codes}"] += 1
                if payload is None:
                    if response.status_code != 200:
                        with tally.lock:
                            tally.other_failures[f"HTTP {response.status_code}"] += 1
                    lost = lost or response.status_code != 429  # an error may come after the commit
                    time.sleep(float(response.headers.get("retry-after", 0.05)) if response.status_code == 429 else 0.05)
                    continue
                break
            statuses = Counter(r["status"] for r in payload["results"])
            with tally.lock:
                tally.answered_batches += 1
                if payload["errors"] or len(payload["results"]) != BATCH or statuses.keys() - {"ACCEPTED", "DUPLICATE"}:
                    tally.problems.append(f"batch {events[0]['idempotencyKey']}: {payload['errors']} {statuses} "
                                          f"{[r['errors'] for r in payload['results'] if r['errors']][:3]}")
                if len(statuses) > 1:  # a batch commits in one transaction: all of it or none
                    tally.problems.append(f"batch {events[0]['idempotencyKey']} was half stored: {dict(statuses)}")
                if lost and statuses == {"DUPLICATE": BATCH}:
                    tally.committed_before_kill += 1
                elif lost:
                    tally.rolled_back_by_kill += 1
                elif statuses.get("DUPLICATE"):
                    tally.problems.append(f"batch {events[0]['idempotencyKey']} sent once came back DUPLICATE")
                for result in payload["results"]:
                    if result["status"] in ("ACCEPTED", "DUPLICATE"):
                        tally.acknowledged.add(events[result["index"]]["idempotencyKey"])


class Server:
    """`shareflow serve` on a fixed port, killed and started again on the same database."""

    def __init__(self, workdir: Path, env: dict, port: int) -> None:
        self.workdir, self.env, self.port = workdir, env, port
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        with open(self.workdir / f"serve-{self.starts}.log", "wb") as log:
            self.process = subprocess.Popen([SHAREFLOW, "serve", "--port", str(self.port)], cwd=self.workdir, env=self.env,
                                            stdout=log, stderr=subprocess.STDOUT)
        until = time.monotonic() + 30
        while time.monotonic() < until:
            assert self.process.poll() is None, f"the server exited: {self.log_tail()}"
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"the server did not come up: {self.log_tail()}")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self) -> str:
        return (self.workdir / f"serve-{self.starts}.log").read_text(errors="replace")[-3000:]


def graphql(url: str, key: str, query: str, variables: dict | None = None) -> dict:
    body = httpx.post(f"{url}/graphql", json={"query": query, "variables": variables or {}},
                      headers={"Authorization": f"Bearer {key}"}, timeout=30).json()
    assert not body.get("errors"), body
    return body["data"]


async def check_books(url: str, owner_key: str, tally: Tally) -> dict:
    """Every check against the database; returns the car-sharing revenue by period (minor units)."""
    rt = Runtime.from_settings(Settings(database_url=url))
    service_id = decode_id(CAR_SHARING, "Service")
    revenue_by_period = {}
    try:
        async with rt.sessions() as session:
            owner = await authenticate(session, f"Bearer {owner_key}", None, rt.keys)
            network = await session.get(Network, owner.network_id)
            service = await session.get(Service, service_id)
            mode = RoundingMode(network.rounding_mode)
            exponent = currency_exponent(service.currency)

            # Exactly once: no key twice, every acknowledged key there, nothing that was never sent.
            doubled = (await session.execute(
                select(UsageEvent.idempotency_key, func.count())
                .where(UsageEvent.network_id == network.id)
                .group_by(UsageEvent.idempotency_key)
                .having(func.count() > 1)
            )).all()
            assert doubled == [], f"events stored more than once: {doubled[:10]}"
            rows = (await session.execute(
                select(UsageEvent, Party.external_ref)
                .join(Party, Party.id == UsageEvent.consumer_id)
                .where(UsageEvent.network_id == network.id)
            )).all()
            stored = {event.idempotency_key: (event, ref) for event, ref in rows}
            missing = tally.acknowledged - stored.keys()
            assert not missing, f"{len(missing)} acknowledged events lost, e.g. {sorted(missing)[:10]}"
            strangers = stored.keys() - tally.sent.keys()
            assert not strangers, f"events stored that no client sent: {sorted(strangers)[:10]}"
            for key, (event, ref) in stored.items():
                sent = tally.sent[key]
                assert event.service_id == service_id and event.voided_at is None, key
                assert (ref, event.metric, event.quantity) == (sent["consumerRef"], sent["metric"], to_micros(D(sent["quantity"]))), key
                assert event.occurred_at == datetime.fromisoformat(sent["occurredAt"]), key

            # Nothing half-written: the running totals are what the raw events add up to.
            by_period: dict[str, list[UsageEvent]] = defaultdict(list)
            for event, _ in stored.values():
                by_period[event.period].append(event)
            for period, events in sorted(by_period.items()):
                charges = {c.metric: c for c in catalog.charges_of(await catalog.plan_for(session, network.id, service_id, period))}
                quantities: dict[tuple[int, str], list[int]] = defaultdict(list)
                for event in events:
                    quantities[(event.consumer_id, event.metric)].append(event.quantity)
                expected_lines = {}
                for (consumer, metric), qs in quantities.items():
                    line = usage_of(charges[metric], [from_micros(q) for q in qs])
                    expected_lines[(consumer, metric)] = (len(qs), sum(qs), price_line(charges[metric], line, exponent, mode))
                lines = {
                    (line.consumer_id, line.metric): (line.events, line.quantity, line.amount)
                    for line in await session.scalars(select(UsageLine).where(
                        UsageLine.network_id == network.id, UsageLine.period == period, UsageLine.service_id == service_id))
                    if line.events or line.quantity or line.amount
                }
                assert lines == expected_lines, f"usage_lines differ from the events in {period}"
                root = sum(amount for _, _, amount in expected_lines.values())
                revenue = await session.scalar(select(ServiceRevenue.amount).where(
                    ServiceRevenue.network_id == network.id, ServiceRevenue.period == period, ServiceRevenue.service_id == service_id))
                assert revenue == root, f"service_revenue {revenue} != {root} priced from the events in {period}"
                revenue_by_period[period] = root
                metrics: dict[str, list] = defaultdict(lambda: [0, 0])
                for event in events:
                    metrics[event.metric][0] += 1
                    metrics[event.metric][1] += event.quantity
                usage_rows = {
                    row.metric: [row.events, row.quantity]
                    for row in await session.scalars(select(ServiceUsage).where(
                        ServiceUsage.network_id == network.id, ServiceUsage.period == period, ServiceUsage.service_id == service_id))
                }
                assert usage_rows == dict(metrics), f"service_usage differs from the events in {period}"

                legs = [leg_of(a) for a in await agreements_in_force(session, network.id, service_id, period)]
                split = split_service(service.billed_by_id, root, legs,
                                      {m: MetricUsage(from_micros(q), n) for m, (n, q) in metrics.items()}, exponent, mode)
                live = await settlement.revenue_flows(rt, owner, period, service_id)
                assert {(f.payer_id, f.payee_id): f.amount for f in live} == dict(split.flows)

                # The books balance: all draft statements, consumers' included, net to zero.
                parties = list(await session.scalars(select(Party).where(Party.network_id == network.id)))
                nets = {}
                for party in parties:
                    statement = await settlement.statement(rt, owner, party.id, period, None)
                    nets[party.id] = statement.totals.net
                    if party.kind == "CONSUMER":
                        paid = sum(amount for (consumer, _), (_, _, amount) in expected_lines.items() if consumer == party.id)
                        assert statement.totals.net == -paid, f"consumer {party.external_ref}'s draft"
                assert sum(nets.values()) == 0, f"the draft statements of {period} do not balance: {nets}"
    finally:
        await rt.close()
    return revenue_by_period


def backend_url(backend: str, tmp_path: Path):
    """(database URL, clean-up) for a fresh database of the backend."""
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path}/crash.db", lambda: None
    url, name = asyncio.run(_postgres_database())
    return url, lambda: asyncio.run(_drop_postgres_database(name))


@pytest.mark.parametrize(
    "backend",
    ["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres,
                                    pytest.mark.skipif(not POSTGRES_URL, reason="SHAREFLOW_TEST_POSTGRES_URL is not set")])],
)
def test_acknowledged_usage_survives_sigkill_exactly_once_and_the_books_balance(backend, tmp_path):
    seed = int(os.environ.get("SHAREFLOW_CRASH_SEED", random.randrange(1_000_000)))
    print(f"seed {seed} (SHAREFLOW_CRASH_SEED to replay the kill moments)")
    rng = random.Random(seed)
    url, clean_up = backend_url(backend, tmp_path)
    try:
        env = {**os.environ, "SHAREFLOW_DATABASE_URL": url}
        for command in ("migrate", "demo"):
            done = subprocess.run([SHAREFLOW, command], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False)
            assert done.returncode == 0, done.stderr
        keys = json.loads((tmp_path / "shareflow-demo-keys.json").read_text())

        server = Server(tmp_path, env, free_port())
        tally = Tally()
        stop, abort = threading.Event(), threading.Event()
        started = time.monotonic()
        deadline = started + LOAD_DEADLINE
        clients = [
            threading.Thread(target=load, args=(server.url, keys["CityCar"], n, seed, stop, abort, deadline, tally), daemon=True)
            for n in range(CLIENTS)
        ]
        kills = rng.randint(3, 5)
        try:
            server.start()
            for client in clients:
                client.start()
            for _ in range(kills):
                time.sleep(rng.uniform(0.2, 1.5))
                server.kill()
                server.start()
            time.sleep(TRAFFIC_AFTER_LAST_RESTART)
            tally.finish_by = time.monotonic() + GRACE
            stop.set()
            for client in clients:
                client.join(timeout=GRACE + 20)
            assert not any(c.is_alive() for c in clients), "a client did not stop"
            services = graphql(server.url, keys["MobilityHub"], "{ network { services { edges { node { id revenue { amount } } } } } }")
            served = {e["node"]["id"]: e["node"]["revenue"] for e in services["network"]["services"]["edges"]}
        finally:
            stop.set()
            abort.set()
            server.stop()
            for client in clients:
                if client.ident is not None:
                    client.join(timeout=20)
        load_seconds = time.monotonic() - started

        print(f"{backend}: {kills} kills, {len(tally.acknowledged)} events acknowledged of {len(tally.sent)} sent in "
              f"{tally.answered_batches} answered batches over {load_seconds:.1f} s; {tally.lost_responses} answers lost "
              f"({tally.committed_before_kill} batches committed before the kill, {tally.rolled_back_by_kill} rolled back), "
              f"{tally.refused} refused connections, other failures {dict(tally.other_failures)}")
        assert not tally.problems, tally.problems[:10]
        assert not tally.unanswered_batches, f"batches never answered after the last restart: {tally.unanswered_batches}"
        assert tally.acknowledged == tally.sent.keys(), "every batch sent was answered in the end"
        assert tally.lost_responses >= 1, "no kill landed on a request in flight: the test proved nothing"

        revenue = asyncio.run(check_books(url, keys["MobilityHub"], tally))
        now_period = max(revenue)
        assert D(served[CAR_SHARING]["amount"]) == D(revenue[now_period]).scaleb(-2), "Service.revenue over HTTP"
    finally:
        clean_up()

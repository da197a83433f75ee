"""Query figure: `valueChain`, `revenueFlows` and `quote` latency (p50/p99) and SQL statements per
request at a few network sizes, in-process through httpx.ASGITransport; the floor is `{ __typename }`
on the same path."""

from __future__ import annotations

import collections
import time
from datetime import UTC, datetime

import httpx
from sqlalchemy import event

from app.server.app import create_app
from app.migrate import upgrade
from app.runtime import Runtime
from app.settings import Settings
from bench.common import Config, Row, Section, fmt_ms, percentile

TITLE = "Queries: `valueChain`, `revenueFlows` and `quote` by network size"
OPERATOR_KEY = "sf_operator_bench_key_0123456789"

CREATE_NETWORK = """mutation($input: CreateNetworkInput!) {
  createNetwork(input: $input) { network { id } ownerApiKey errors { field code message } } }"""
ONBOARD = """mutation($input: OnboardPartnerInput!) {
  onboardPartner(input: $input) { party { id } agreements { id } apiKey errors { field code message } } }"""
CREATE_SERVICE = """mutation($input: CreateServiceInput!) {
  createService(input: $input) { service { id } errors { field code message } } }"""

VALUE_CHAIN = """query ValueChain($serviceId: ID!) {
  valueChain(serviceId: $serviceId) {
    service { id name }
    parties { id name kind }
    agreements {
      id effectiveFrom effectiveTo
      payer { id name }
      payee { id name }
      rule { kind percent amount metric base weight priority min max }
    }
  }
}"""
QUOTE = """query Quote($serviceId: ID!, $usage: [QuoteUsageInput!]!) {
  quote(serviceId: $serviceId, usage: $usage) {
    total { amount currency }
    lines { metric quantity events amount { amount currency } }
    flows { period amount { amount currency } payer { id name } payee { id name } }
    retained { amount { amount currency } party { id name } }
  }
}"""
REVENUE_FLOWS = """query RevenueFlows($period: String!, $serviceId: ID!) {
  revenueFlows(period: $period, serviceId: $serviceId) {
    period adjustment amount { amount currency } payer { id name } payee { id name }
  }
}"""
PERIODS = "{ network { periods { key status } } }"
RECORD = """mutation($events: [UsageInput!]!) { recordUsage(events: $events) { accepted errors { code } } }"""
CONSUMERS = 50
"Consumers whose usage the service's revenue comes from (the flows' root)."
TYPENAME = "{ __typename }"
USAGE = [{"metric": "minutes", "quantity": "30"}, {"metric": "rental", "quantity": "1"}]
CHARGES = [
    {"metric": "minutes", "model": "PER_UNIT", "unitPrice": "0.29"},
    {"metric": "rental", "model": "FLAT", "unitPrice": "1.00"},
]


class Client:
    """Posts GraphQL through the ASGI app and counts the SQL statements each request runs."""

    def __init__(self, http: httpx.AsyncClient, rt: Runtime) -> None:
        self.http = http
        self.statements = 0
        event.listen(rt.engine.sync_engine, "before_cursor_execute", self._count)

    def _count(self, *_args, **_kwargs) -> None:
        self.statements += 1

    async def post(self, query: str, variables: dict | None = None, key: str | None = None) -> tuple[dict, float, int]:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        payload = {"query": query, "variables": variables or {}}
        before = self.statements
        started = time.perf_counter()
        response = await self.http.post("/graphql", json=payload, headers=headers)
        elapsed = time.perf_counter() - started
        statements = self.statements - before
        response.raise_for_status()
        body = response.json()
        if body.get("errors"):
            raise RuntimeError(body["errors"])
        return body["data"], elapsed * 1000, statements

    async def mutate(self, query, variables, key, field):
        data, _, _ = await self.post(query, variables, key)
        payload = data[field]
        if payload["errors"]:
            raise RuntimeError(payload["errors"])
        return payload


async def build(client: Client, partners: int) -> tuple[str, str]:
    """A network with one service and `partners` partners, each onboarded with an agreement (owner pays
    the partner 0.1% of the service's revenue); returns (owner key, service id)."""
    created = await client.mutate(CREATE_NETWORK, {"input": {"name": "Bench", "currency": "EUR", "ownerName": "Owner"}},
                                  OPERATOR_KEY, "createNetwork")
    owner = created["ownerApiKey"]
    provider = await client.mutate(ONBOARD, {"input": {"name": "Provider", "kind": "PROVIDER"}}, owner, "onboardPartner")
    service = await client.mutate(CREATE_SERVICE, {"input": {"name": "Car sharing", "providerId": provider["party"]["id"],
                                                             "charges": CHARGES}}, owner, "createService")
    service_id = service["service"]["id"]
    for i in range(partners):
        await client.mutate(ONBOARD, {"input": {
            "name": f"Partner {i:04d}", "kind": "PARTNER",
            "agreements": [{"serviceId": service_id, "rule": {"kind": "PERCENT", "percent": "0.1"}}],
        }}, owner, "onboardPartner")
    return owner, service_id


async def record_usage(client: Client, owner: str, service_id: str) -> str:
    """A rental of 30 minutes for each of CONSUMERS consumers in the open period; returns its key."""
    data, _, _ = await client.post(PERIODS, {}, owner)
    period = next(p["key"] for p in data["network"]["periods"] if p["status"] == "OPEN")
    now = datetime.now(UTC).isoformat()
    events = [
        {"idempotencyKey": f"bench-{i}-{metric}", "serviceId": service_id, "consumerRef": f"consumer-{i}",
         "metric": metric, "quantity": quantity, "occurredAt": now}
        for i in range(CONSUMERS) for metric, quantity in (("minutes", "30"), ("rental", "1"))
    ]
    recorded = await client.mutate(RECORD, {"events": events}, owner, "recordUsage")
    assert recorded["accepted"] == len(events), recorded
    return period


async def measure_size(cfg: Config, partners: int, iterations: int, warmup: int):
    db = cfg.workdir / f"shareflow-{partners}.db"
    # auth_cache_seconds stays at its default (2 s), as deployed.
    rt = Runtime.from_settings(Settings(database_url=f"sqlite+aiosqlite:///{db}", operator_key=OPERATOR_KEY))
    try:
        await upgrade(rt.engine)
        app = create_app(rt=rt)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shareflow.bench") as http:
            client = Client(http, rt)
            started = time.perf_counter()
            owner, service_id = await build(client, partners)
            build_seconds = time.perf_counter() - started

            period = await record_usage(client, owner, service_id)
            operations = {
                "valueChain": (VALUE_CHAIN, {"serviceId": service_id}),
                "revenueFlows": (REVENUE_FLOWS, {"period": period, "serviceId": service_id}),
                "quote": (QUOTE, {"serviceId": service_id, "usage": USAGE}),
                "floor": (TYPENAME, {}),
            }
            data, _, _ = await client.post(VALUE_CHAIN, {"serviceId": service_id}, owner)
            agreements = data["valueChain"]["agreements"]
            assert len(agreements) == partners, len(agreements)
            data, _, _ = await client.post(REVENUE_FLOWS, {"period": period, "serviceId": service_id}, owner)
            revenue_flows = len(data["revenueFlows"])
            assert revenue_flows == partners, revenue_flows  # the owner's share to each partner
            data, _, _ = await client.post(QUOTE, {"serviceId": service_id, "usage": USAGE}, owner)
            flows = len(data["quote"]["flows"])
            for _ in range(warmup):
                for query, variables in operations.values():
                    await client.post(query, variables, owner)
            times = {name: [] for name in operations}
            statements = {name: [] for name in operations}
            for _ in range(iterations):  # interleaved, so drift hits every operation alike
                for name, (query, variables) in operations.items():
                    _, ms, n = await client.post(query, variables, owner)
                    times[name].append(ms)
                    statements[name].append(n)
    finally:
        await rt.close()
    return times, statements, build_seconds, {"quote": flows, "revenueFlows": revenue_flows}


def _statements(counts: list[int]) -> str:
    common, _ = collections.Counter(counts).most_common(1)[0]
    return f"{common}" + (f" (max {max(counts)})" if max(counts) != common else "")


async def run(cfg: Config) -> Section:
    sizes = cfg.pick([5, 50, 500], [5, 50])
    iterations = cfg.pick(300, 100)
    warmup = cfg.pick(20, 10)
    rows, notes = [], []
    for partners in sizes:
        times, statements, build_seconds, flows = await measure_size(cfg, partners, iterations, warmup)
        floor_p50, floor_p99 = percentile(times["floor"], 50), percentile(times["floor"], 99)
        floor = f"`{{ __typename }}` p50 {fmt_ms(floor_p50)}, p99 {fmt_ms(floor_p99)}"
        for name in ("valueChain", "revenueFlows", "quote"):
            p50, p99 = percentile(times[name], 50), percentile(times[name], 99)
            rows.append(Row(
                f"`{name}`", f"{partners} partners", f"p50 {fmt_ms(p50)}, p99 {fmt_ms(p99)}; {_statements(statements[name])} SQL/req",
                floor, f"p50 ×{p50 / floor_p50:.1f}, p99 ×{p99 / floor_p99:.1f}",
                f"{iterations} requests" + (f"; {flows[name]} flows" if name in flows else ""),
            ))
        notes.append(f"{partners} partners: built through the API in {build_seconds:.1f} s "
                     f"({(build_seconds / max(partners, 1)) * 1000:.1f} ms per onboardPartner with its agreement); "
                     f"`{{ __typename }}` ran {_statements(statements['floor'])} SQL/req, "
                     f"mean latencies valueChain {fmt_ms(sum(times['valueChain']) / iterations)}, "
                     f"revenueFlows {fmt_ms(sum(times['revenueFlows']) / iterations)}, "
                     f"quote {fmt_ms(sum(times['quote']) / iterations)}.")
    method = (
        "In-process: `app.server.app.create_app(rt=Runtime.from_settings(Settings(...)))` on a fresh SQLite file per size, "
        "driven by `httpx.ASGITransport` (the full Starlette + Strawberry stack, no socket), one request at a time, "
        "as the network's owner. Each size is a network with one service (two charges) and N partners, each "
        "onboarded by `onboardPartner` with a 0.1% PERCENT agreement from the owner on that service, and "
        f"`recordUsage` of a 30-minute rental for each of {CONSUMERS} consumers in the open period, so that "
        "`revenueFlows(period, serviceId)` has the owner's share of the service's revenue to every partner, from the "
        "running totals. SQL statements "
        "are counted by a SQLAlchemy `before_cursor_execute` listener on `rt.engine.sync_engine` (the connection "
        "PRAGMAs are not counted); the key cache stays at its 2 s default, so the authentication query shows up as the "
        "occasional `max`. Floor: `{ __typename }` with the same key, interleaved with the measured requests after "
        f"a warm-up of {warmup} rounds; percentiles are nearest-rank."
    )
    return Section(TITLE, method, rows, notes)

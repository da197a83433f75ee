"""Every door of the gateway answers the same way: each request spends its key's budget (or, without
a valid key, its client address's), every failure is JSON with a code, the metrics stay bounded
under any traffic, and a client's mistake is one INFO line, never a traceback."""

import asyncio
import json
import logging
import re
import uuid
from datetime import UTC, datetime

import httpx

from app.server.app import create_app
from app.runtime import Runtime
from app.settings import Settings
from tests.conftest import OPERATOR_KEY
from tests.graph.test_limits import ME, app_with, bearer

QUOTE = """query($id: ID!, $usage: [QuoteUsageInput!]!) {
  quote(serviceId: $id, usage: $usage) { total { amount } flows { amount { amount } } }
}"""
RECORD = """mutation($events: [UsageInput!]!) { recordUsage(events: $events) { accepted rejected errors { code } } }"""


def client_from(app, address: str = "127.0.0.1") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(address, 40000)), base_url="http://shareflow.test")


# --- the rate limit at every door ----------------------------------------------------------------


async def test_statement_downloads_spend_the_keys_budget(rt, network):
    async with client_from(app_with(rt, rate_limit_per_minute=3)) as client:
        for _ in range(3):
            assert (await client.get("/statements/U3RhdGVtZW50OjE=.csv", headers=bearer(network.owner.key))).status_code == 404
        refused = await client.get("/statements/U3RhdGVtZW50OjE=.csv", headers=bearer(network.owner.key))
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert refused.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
        # The same key is refused at the GraphQL door too: one budget for every door.
        assert (await client.post("/graphql", json={"query": ME}, headers=bearer(network.owner.key))).status_code == 429


async def test_requests_without_a_valid_key_spend_their_client_addresses_budget(rt, network):
    app = app_with(rt, rate_limit_per_minute=3)
    async with client_from(app, "192.0.2.1") as stranger, client_from(app, "192.0.2.2") as neighbour:
        for headers in ({}, bearer("sf_000000000000_guessed"), {}):
            answer = await stranger.post("/graphql", json={"query": ME}, headers=headers)
            assert answer.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        refused = await stranger.post("/usage.ndjson", content=b"{}\n")
        assert refused.status_code == 429 and refused.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
        assert (await stranger.get("/metrics")).status_code == 429
        # Another address has its own budget, and a valid key its own, from the same address too.
        assert (await neighbour.post("/graphql", json={"query": ME})).status_code == 200
        assert (await stranger.post("/graphql", json={"query": ME}, headers=bearer(network.owner.key))).status_code == 200


async def test_forwarded_addresses_count_only_from_a_trusted_proxy(rt):
    app = app_with(rt, rate_limit_per_minute=2, trusted_proxies=["10.0.0.0/8"])
    async with client_from(app, "10.1.2.3") as proxy, client_from(app, "192.0.2.9") as direct:
        for client_address in ("198.51.100.1", "198.51.100.2"):
            for _ in range(2):
                answer = await proxy.post("/graphql", json={"query": ME}, headers={"X-Forwarded-For": client_address})
                assert answer.status_code == 200
        assert (await proxy.post("/graphql", json={"query": ME}, headers={"X-Forwarded-For": "198.51.100.1"})).status_code == 429
        # From a peer that is no trusted proxy the header is ignored: its own address pays.
        for forwarded in ("203.0.113.1", "203.0.113.2"):
            assert (await direct.post("/graphql", json={"query": ME}, headers={"X-Forwarded-For": forwarded})).status_code == 200
        assert (await direct.post("/graphql", json={"query": ME}, headers={"X-Forwarded-For": "203.0.113.3"})).status_code == 429


async def test_health_probes_are_never_limited(rt):
    async with client_from(app_with(rt, rate_limit_per_minute=1)) as client:
        assert (await client.get("/metrics")).status_code == 200
        assert (await client.get("/metrics")).status_code == 429
        for _ in range(3):
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/readyz")).status_code == 200


# --- every failure answers JSON ------------------------------------------------------------------


async def test_bodies_that_are_no_graphql_request_answer_400_invalid_as_json(client, network, caplog):
    for body in (b'"hello"', b"null", b"[" * 100_000 + b"]" * 100_000, b"[]", b'{"query": 5}', b'{"query": "\xff"}'):
        answer = await client.post(
            "/graphql", content=body, headers={"content-type": "application/json", **bearer(network.owner.key)}
        )
        assert answer.status_code == 400, body[:20]
        assert answer.headers["content-type"].startswith("application/json")
        assert answer.json()["errors"][0]["extensions"]["code"] == "INVALID"
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]


async def test_unknown_paths_and_methods_answer_json(client):
    missing = await client.get("/nowhere")
    assert missing.status_code == 404 and missing.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    refused = await client.put("/graphql", json={"query": "{ __typename }"})
    assert refused.status_code == 405 and refused.json()["errors"][0]["extensions"]["code"] == "INVALID"


async def test_an_ndjson_line_nested_too_deeply_is_refused_alone_and_the_stream_ends(client, mobility):
    now = datetime.now(UTC).isoformat()
    good = json.dumps({"idempotencyKey": "nest-1", "serviceId": mobility.service_id, "consumerRef": "ann",
                       "metric": "minutes", "quantity": "3", "occurredAt": now})
    body = ("[" * 100_000 + "]" * 100_000 + "\n" + good + "\n").encode()
    answer = await client.post("/usage.ndjson", content=body, headers=bearer(mobility.citycar.key))
    lines = [json.loads(line) for line in answer.text.splitlines()]
    assert [line.get("status") for line in lines[:2]] == ["REJECTED", "ACCEPTED"]
    assert lines[0]["errors"][0]["code"] == "INVALID"
    assert lines[-1] == {"accepted": 1, "duplicates": 0, "rejected": 1}


async def test_a_subscription_over_http_is_the_clients_mistake(client, network):
    answer = await client.post(
        "/graphql", json={"query": "subscription { settlementUpdated { period } }"}, headers=bearer(network.owner.key)
    )
    assert answer.status_code == 400
    assert answer.json()["errors"][0]["extensions"]["code"] == "INVALID"
    assert "WebSocket" in answer.json()["errors"][0]["message"]


async def test_a_database_that_is_down_answers_internal_with_the_request_id(tmp_path):
    rt = Runtime.from_settings(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/missing/dir/db.sqlite", operator_key=OPERATOR_KEY))
    try:
        async with client_from(create_app(rt=rt)) as client:
            answer = await client.post("/graphql", json={"query": ME}, headers=bearer("sf_0123456789ab_secret"))
        assert answer.status_code == 500
        error = answer.json()["errors"][0]
        assert error["extensions"] == {"code": "INTERNAL", "requestId": answer.headers["x-request-id"]}
    finally:
        await rt.close()


# --- /metrics stays bounded ----------------------------------------------------------------------


def _operation_series(text: str) -> set[str]:
    return set(re.findall(r'shareflow_graphql_operation_seconds_count\{operation="([^"]*)"', text))


async def test_the_metric_set_stays_bounded_under_a_thousand_operation_names(rt, network):
    app = app_with(rt)  # a runtime of its own: the names it keeps apart are its own
    limit = app.state.rt.operation_labels.limit
    run = uuid.uuid4().hex[:8]  # names no other test sent to the process's registry
    async with client_from(app) as client:
        before = _operation_series((await client.get("/metrics")).text)
        for number in range(1000):
            await client.post("/graphql", json={"query": f"query Probe{run}x{number} {{ __typename }}"})
            await client.post("/graphql", json={"query": f"query Named{run}x{number} {{ __typename }}"}, headers=bearer(network.owner.key))
        added = _operation_series((await client.get("/metrics")).text) - before
    assert not any(name.startswith("Probe") for name in added)
    assert {name for name in added if name.startswith("Named")} == {f"Named{run}x{number}" for number in range(limit)}
    assert added <= {f"Named{run}x{number}" for number in range(limit)} | {"anonymous", "other"}


# --- client mistakes are INFO lines --------------------------------------------------------------


async def test_a_refusal_is_one_info_line_naming_the_key_not_an_error(api, network, caplog):
    with caplog.at_level(logging.DEBUG):
        usage = [{"metric": "minutes", "quantity": "1"}]
        assert await api.error_code(QUOTE, {"id": "U2VydmljZTo5OTk5OTk5", "usage": usage}, network.owner.key) == "NOT_FOUND"
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]
    refusals = [record for record in caplog.records if "refused NOT_FOUND" in record.getMessage()]
    assert len(refusals) == 1 and refusals[0].levelno == logging.INFO and refusals[0].exc_info is None
    prefix = network.owner.key.split("_")[1]
    assert prefix in refusals[0].getMessage()


# --- heavy requests: capped, and never holding the event loop -------------------------------------


async def test_a_quote_of_more_than_5000_items_is_refused_before_its_items_are_read(api, mobility, monkeypatch):
    from app.services import quotes

    async def never(*_args, **_kwargs):
        raise AssertionError("the use-case was reached")

    monkeypatch.setattr(quotes, "quote", never)
    for size in (5001, 100_000):
        usage = [{"metric": "minutes", "quantity": "1"}] * size
        for _ in range(2):  # the second time the query's text is known (the fast path's way)
            body = await api.post(QUOTE, {"id": mobility.service_id, "usage": usage}, mobility.net.owner.key)
            assert [(e["extensions"]["code"], e["extensions"]["field"]) for e in body["errors"]] == [("BATCH_TOO_LARGE", ["usage"])]


class _SlowSteps(logging.Handler):
    """asyncio's debug report of a callback that held the loop past slow_callback_duration."""

    def __init__(self) -> None:
        super().__init__()
        self.reports: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "took" in record.getMessage():
            self.reports.append(record.getMessage())


async def test_the_largest_quote_and_recording_never_hold_the_event_loop_half_a_second(api, mobility):
    usage = [{"metric": "minutes", "quantity": str(n % 90 + 1)} for n in range(5000)]
    now = datetime.now(UTC).isoformat()
    events = [
        {"idempotencyKey": f"heavy-{n}", "serviceId": mobility.service_id, "consumerRef": f"c{n % 300}",
         "metric": "minutes", "quantity": "3", "occurredAt": now}
        for n in range(5001)
    ]
    # Warmed up first (statements compiled, caches filled): the steps measured are a server's usual ones.
    await api.data(QUOTE, {"id": mobility.service_id, "usage": usage[:10]}, mobility.net.owner.key)
    await api.data(RECORD, {"events": events[5000:]}, mobility.citycar.key)
    loop = asyncio.get_running_loop()
    slow = _SlowSteps()
    logging.getLogger("asyncio").addHandler(slow)
    was_debug, was_duration = loop.get_debug(), loop.slow_callback_duration
    loop.set_debug(True)
    loop.slow_callback_duration = 0.5
    try:
        quote = await api.data(QUOTE, {"id": mobility.service_id, "usage": usage}, mobility.net.owner.key)
        assert quote["quote"]["total"]["amount"]
        recorded = (await api.data(RECORD, {"events": events[:5000]}, mobility.citycar.key))["recordUsage"]
        assert recorded["accepted"] == 5000
    finally:
        loop.set_debug(was_debug)
        loop.slow_callback_duration = was_duration
        logging.getLogger("asyncio").removeHandler(slow)
    assert slow.reports == []

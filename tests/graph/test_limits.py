"""Limits with clear errors: query depth, aliases and tokens (validation errors naming the limit),
the request body (413 LIMIT_EXCEEDED), `first` on connections (at most 100), and the rate per API key
(429 RATE_LIMITED), in-process and shared by gateway processes through Redis."""

import asyncio
import json
import os
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import httpx
import pytest

from app.limits import RateLimiter, RedisRateLimiter, rate_limiter
from app.server.app import create_app
from app.settings import Settings

ME = "{ me { party { name } } }"
PARTIES = "query($first: Int) { network { parties(first: $first) { edges { node { name } } } } }"
EVENTS = "query($first: Int) { usageEvents(first: $first) { edges { node { idempotencyKey } } } }"
RECORD = """
mutation($events: [UsageInput!]!) {
  recordUsage(events: $events) {
    accepted duplicates rejected
    results { index status errors { field code } }
    errors { field code }
  }
}"""
REDIS_URL = os.environ.get("SHAREFLOW_TEST_REDIS_URL")


def nested(depth: int) -> str:
    """A query `depth` fields deep: network, owner, then agreements/service/provider in turn."""
    path = ["network", "owner"]
    cycle = ["agreements", "service", "provider"]
    while len(path) < depth - 1:
        path.append(cycle[(len(path) - 2) % 3])
    leaf = "id"
    return "{ " + " { ".join(path) + " { " + leaf + " }" * len(path) + " }"


def app_with(rt, **settings):
    """An app over the same database whose settings differ (the runtime's engine is shared)."""
    return create_app(rt=replace(rt, settings=rt.settings.model_copy(update=settings)))


def client_of(app) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://shareflow.test")


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


# --- depth, aliases, tokens: validation errors before anything runs ----------------------------


async def test_a_query_at_the_depth_limit_runs(api, network):
    # The limit counts the nesting below the root fields: 13 fields deep is depth 12.
    await api.data(nested(13), key=network.owner.key)


async def test_a_query_past_the_depth_limit_is_refused_naming_the_limit(api, network):
    body = await api.post(nested(14), key=network.owner.key)
    assert body["data"] is None
    assert [e["message"] for e in body["errors"]] == ["'anonymous' exceeds maximum operation depth of 12"]
    assert body["errors"][0]["extensions"]["code"] == "LIMIT_EXCEEDED"


async def test_thirty_aliases_run_and_the_thirty_first_is_refused(api, network):
    thirty = "{ " + " ".join(f"a{i}: __typename" for i in range(30)) + " }"
    await api.data(thirty, key=network.owner.key)
    body = await api.post(thirty[:-1] + "a30: __typename }", key=network.owner.key)
    assert body["data"] is None
    assert [e["message"] for e in body["errors"]] == ["31 aliases found. Allowed: 30"]
    assert body["errors"][0]["extensions"]["code"] == "LIMIT_EXCEEDED"


async def test_a_document_of_more_than_5000_tokens_is_refused_unparsed(api, network):
    # `{ a: __typename ... }`: 3 tokens an alias, the braces 2 (and the alias limit never looks).
    body = await api.post("{" + " x: __typename" * 1700 + " }", key=network.owner.key)
    assert body["data"] is None
    assert [e["message"] for e in body["errors"]] == ["Syntax Error: Document contains more than 5000 tokens. Parsing aborted."]


async def test_limit_refusals_are_request_errors_in_graphql_response_json(client, network):
    response = await client.post(
        "/graphql",
        json={"query": nested(14)},
        headers={**bearer(network.owner.key), "Accept": "application/graphql-response+json"},
    )
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/graphql-response+json")
    assert "data" not in response.json() and response.json()["errors"]


# --- first ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("query", [PARTIES, EVENTS], ids=["network.parties", "usageEvents"])
async def test_first_may_be_100_but_not_101(api, network, query):
    await api.data(query, {"first": 100}, network.owner.key)
    body = await api.post(query, {"first": 101}, network.owner.key)
    assert body["data"] is None
    assert [(e["extensions"]["code"], e["extensions"]["field"]) for e in body["errors"]] == [("INVALID", ["first"])]


# --- the request body ----------------------------------------------------------------------------


def _batch(service_id: str, count: int, key_length: int) -> list[dict]:
    now = datetime.now(UTC).isoformat(timespec="microseconds")  # in the network's first period, whenever the test runs
    return [
        {
            "idempotencyKey": f"{i:08d}".ljust(key_length, "k"),
            "serviceId": service_id,
            "consumerRef": f"{i:08d}".ljust(key_length, "c"),
            "metric": "minutes",
            "quantity": "1234.567",
            "occurredAt": now,
        }
        for i in range(count)
    ]


def test_the_largest_recordusage_batch_fits_the_default_body_limit():
    """5,000 events (the batch limit) with 200-character keys (their limit), pretty-printed."""
    body = json.dumps({"query": RECORD, "variables": {"events": _batch("U2VydmljZToxMjM0NQ==", 5000, 200)}}, indent=2)
    assert 3_000_000 < len(body.encode()) < Settings().max_body_bytes == 4 * 1024 * 1024


async def test_a_full_batch_of_5000_events_goes_through(client, mobility):
    body = json.dumps({"query": RECORD, "variables": {"events": _batch(mobility.service_id, 5000, 200)}}, indent=2)
    response = await client.post(
        "/graphql", content=body, headers={**bearer(mobility.citycar.key), "Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text[:500]
    payload = response.json()["data"]["recordUsage"]
    assert (payload["accepted"], payload["rejected"]) == (5000, 0)


async def test_a_body_above_the_limit_is_413_limit_exceeded(rt, network):
    async with client_of(app_with(rt, max_body_bytes=1000)) as client:
        response = await client.post(
            "/graphql", json={"query": ME, "variables": {"pad": "x" * 1000}}, headers=bearer(network.owner.key)
        )
        assert response.status_code == 413
        assert response.json() == {
            "errors": [{"message": "the request body is larger than 1000 bytes", "extensions": {"code": "LIMIT_EXCEEDED"}}]
        }
        # A body just under the limit is answered as usual.
        small = await client.post("/graphql", json={"query": ME}, headers=bearer(network.owner.key))
        assert small.status_code == 200 and small.json()["data"]["me"]["party"]["name"]


async def test_a_chunked_body_is_cut_off_at_the_limit(rt, network):
    async def chunks():
        yield b'{"query": "{ me { party { name } } }", "pad": "'
        for _ in range(20):
            yield b"x" * 100
        yield b'"}'

    async with client_of(app_with(rt, max_body_bytes=1000)) as client:
        response = await client.post(
            "/graphql", content=chunks(), headers={**bearer(network.owner.key), "Content-Type": "application/json"}
        )
    assert "content-length" not in response.request.headers
    assert response.status_code == 413 and response.json()["errors"][0]["extensions"]["code"] == "LIMIT_EXCEEDED"


# --- the rate per key ----------------------------------------------------------------------------


def test_the_default_rate_is_generous_and_zero_turns_it_off():
    assert Settings().rate_limit_per_minute == 6000
    assert rate_limiter(0, None) is None
    assert type(rate_limiter(60, None)) is RateLimiter


async def test_a_key_over_its_rate_gets_429_rate_limited_and_other_keys_do_not(rt, network):
    other = await network.onboard("Other")
    async with client_of(app_with(rt, rate_limit_per_minute=3)) as client:
        for _ in range(3):
            ok = await client.post("/graphql", json={"query": ME}, headers=bearer(network.owner.key))
            assert ok.status_code == 200 and not ok.json().get("errors")
        refused = await client.post("/graphql", json={"query": ME}, headers=bearer(network.owner.key))
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) >= 1
        error = refused.json()["errors"][0]
        assert error["extensions"]["code"] == "RATE_LIMITED" and "data" not in refused.json()
        assert 0 < error["extensions"]["retryAfterSeconds"] <= 20
        # Another key has its own budget, and so has a request without a key (its client address's).
        assert (await client.post("/graphql", json={"query": ME}, headers=bearer(other.key))).status_code == 200
        anonymous = await client.post("/graphql", json={"query": ME})
        assert anonymous.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_a_request_the_fast_path_hands_on_costs_one_token(rt, network):
    # A prepared query whose execution fails goes through the fast path and then through strawberry:
    # both ask for the context, the budget is charged once.
    query = "query($id: ID!) { party(id: $id) { name } }"
    async with client_of(app_with(rt, rate_limit_per_minute=4)) as client:
        for _ in range(4):
            response = await client.post(
                "/graphql", json={"query": query, "variables": {"id": "UGFydHk6OTk5OTk5"}}, headers=bearer(network.owner.key)
            )
            assert response.status_code == 200
        assert (await client.post("/graphql", json={"query": ME}, headers=bearer(network.owner.key))).status_code == 429


async def test_the_bucket_refills_with_time():
    now = [0.0]
    limiter = RateLimiter(60, clock=lambda: now[0])
    for _ in range(60):
        await limiter.check("key:1")
    with pytest.raises(Exception) as refused:
        await limiter.check("key:1")
    assert refused.value.code == "RATE_LIMITED" and refused.value.retry_after == pytest.approx(1.0)
    now[0] += 1.0
    await limiter.check("key:1")


@pytest.mark.skipif(not REDIS_URL, reason="set SHAREFLOW_TEST_REDIS_URL to test the limit shared through Redis")
async def test_two_gateways_share_one_budget_through_redis(rt, network):
    prefix = f"shareflow-test:{uuid.uuid4().hex}:"
    apps = [app_with(rt, rate_limit_per_minute=4, redis_url=REDIS_URL) for _ in range(2)]
    for app in apps:
        assert type(app.state.graphql.rate_limiter) is RedisRateLimiter
        app.state.graphql.rate_limiter.prefix = prefix  # this test's keys only
    try:
        async with client_of(apps[0]) as first, client_of(apps[1]) as second:
            statuses = []
            for client in (first, second, first, second, first, second):
                response = await client.post("/graphql", json={"query": ME}, headers=bearer(network.owner.key))
                statuses.append(response.status_code)
            assert statuses == [200, 200, 200, 200, 429, 429]
            assert response.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
    finally:
        redis = apps[0].state.graphql.rate_limiter.redis
        await redis.delete(*[key async for key in redis.scan_iter(match=prefix + "*")] or [prefix])
        await asyncio.gather(*(app.state.graphql.rate_limiter.close() for app in apps))


async def test_an_unreachable_redis_lets_requests_through(rt, network):
    app = app_with(rt, rate_limit_per_minute=1, redis_url="redis://127.0.0.1:9/0")
    try:
        async with client_of(app) as client:
            for _ in range(3):
                response = await client.post("/graphql", json={"query": ME}, headers=bearer(network.owner.key))
                assert response.status_code == 200 and not response.json().get("errors")
    finally:
        await app.state.graphql.rate_limiter.close()

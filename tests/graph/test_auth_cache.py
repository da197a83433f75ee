"""The key cache (principal, party and network together) and the fast path for known queries."""

import asyncio
import contextlib

import pytest
from sqlalchemy import event

from graph.extensions import PREPARED

ME = "{ me { party { id name kind } network { name currency } } }"
KEYS = "query($id: ID!) { party(id: $id) { apiKeys { id } } }"
REVOKE = "mutation($id: ID!) { revokeApiKey(id: $id) { key { id revokedAt } errors { code } } }"


@contextlib.contextmanager
def statements(rt):
    """The SQL statements issued inside the block."""
    seen: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        if statement != "BEGIN":  # SQLite's explicit BEGIN (app/sqlite.py) is no query
            seen.append(statement)

    event.listen(rt.engine.sync_engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(rt.engine.sync_engine, "before_cursor_execute", count)


@pytest.fixture
def cache(rt):
    """The shared runtime's key cache switched on for one test (conftest turns it off)."""
    ttl = rt.keys.ttl
    rt.keys.ttl = 60
    rt.keys._entries.clear()
    yield rt.keys
    rt.keys.ttl = ttl
    rt.keys._entries.clear()


async def test_me_issues_no_statement_while_its_key_is_cached(api, network, rt, cache):
    first = await api.data(ME, key=network.owner.key)
    with statements(rt) as seen:
        again = await api.data(ME, key=network.owner.key)
    assert again == first
    assert first["me"]["party"]["kind"] == "OWNER" and first["me"]["network"]["currency"] == "EUR"
    assert seen == []
    assert ME in PREPARED  # and it took the fast path


async def test_a_cached_key_revoked_through_this_process_fails_at_once(api, network, rt, cache):
    partner = await network.onboard("ParkSpace")
    assert (await api.data(ME, key=partner.key))["me"]["party"]["name"] == "ParkSpace"
    assert (await api.data(ME, key=partner.key))["me"]["party"]["name"] == "ParkSpace"  # from the cache
    [key] = (await api.data(KEYS, {"id": partner.id}, network.owner.key))["party"]["apiKeys"]
    payload = (await api.data(REVOKE, {"id": key["id"]}, network.owner.key))["revokeApiKey"]
    assert payload["errors"] == []
    assert await api.error_code(ME, key=partner.key) == "UNAUTHENTICATED"
    assert (await api.data(ME, key=network.owner.key))["me"]["party"]["kind"] == "OWNER"


async def test_without_the_cache_every_request_asks_the_database(api, network, rt):
    assert rt.keys.ttl == 0
    await api.data(ME, key=network.owner.key)
    with statements(rt) as seen:
        await api.data(ME, key=network.owner.key)
    assert len(seen) == 1  # the key with its party and network, in one statement


async def test_concurrent_requests_share_one_verification_of_a_key(api, network, rt, cache):
    with statements(rt) as seen:
        answers = await asyncio.gather(*(api.data(ME, key=network.owner.key) for _ in range(8)))
    assert all(answer == answers[0] for answer in answers)
    assert len(seen) == 1


async def test_a_known_query_without_a_key_still_meets_the_gate(api, network, cache):
    await api.data(ME, key=network.owner.key)
    body = await api.post(ME)
    assert body == {"data": None, "errors": [{"message": "a valid API key is required", "extensions": {"code": "UNAUTHENTICATED"}}]}


async def test_a_known_query_that_fails_is_answered_with_shaped_errors(api, network, cache):
    query = "query($id: ID!) { party(id: $id) { name } }"
    assert (await api.data(query, {"id": network.owner.id}, network.owner.key))["party"]["name"]
    assert query in PREPARED
    body = await api.post(query, {"id": "not a global id"}, network.owner.key)
    assert body["data"] == {"party": None}
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert body["errors"][0]["path"] == ["party"]


async def test_the_fast_path_answers_the_same_bytes_as_strawberry(client, network, cache):
    app_view = next(route for route in client._transport.app.routes if getattr(route, "path", "") == "/graphql").endpoint
    headers = {"Authorization": f"Bearer {network.owner.key}"}
    query = {"query": ME, "variables": {}}
    slow = await client.post("/graphql", json=query, headers={**headers, "Accept": "application/graphql-response+json, application/json"})
    fast = await client.post("/graphql", json=query, headers=headers)
    app_view.fast_path = False
    try:
        off = await client.post("/graphql", json=query, headers=headers)
    finally:
        app_view.fast_path = True
    assert fast.status_code == off.status_code == slow.status_code == 200
    assert fast.content == off.content == slow.content
    assert fast.headers["content-type"] == off.headers["content-type"]

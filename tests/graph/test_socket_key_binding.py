"""An open WebSocket is bound to its key (DESIGN §7): once the key is revoked, every socket opened
with it closes (4403; `connection_error` then close on the legacy protocol), in this process at once
and in every other through the pub/sub, and nothing sent on it runs any more. Each operation on a
socket passes the same key check, rate budget and size limit as an HTTP request. Revoking a key
revokes every key it issued, down the line."""

import os
import time
from dataclasses import replace

import httpx
import pytest

from app.auth import KeyCache
from app.server.app import create_app
from app.pubsub import InProcessPubSub, RedisPubSub
from app.runtime import Runtime
from graph import subscriptions
from tests.graph.conftest import mobility_network
from tests.graph.test_api_keys import ISSUE, KEYS, ME, REVOKE
from tests.graph.test_limits import app_with
from tests.graph.test_record_usage import EVENTS, RECORD, event
from tests.graph.test_subscriptions import (
    FINALIZED, LEGACY_WS, PROTOCOLS, TRANSPORT_WS, UPDATED, Closed, GraphQLSocket, error_code, rental, serve, ws_url,  # noqa: F401 - a fixture
)
from tests.servers import free_port

REDIS_URL = os.environ.get("SHAREFLOW_TEST_REDIS_URL")
FORBIDDEN_CLOSE = 4403
TOO_LARGE_CLOSE = 4413


async def key_id(api, member, owner_key: str) -> str:
    """The id of the key a member was given (its prefix is the key's second part)."""
    listed = (await api.data(KEYS, {"id": member.id}, owner_key))["party"]["apiKeys"]
    [found] = [key["id"] for key in listed if member.key.startswith(key["prefix"] + "_")]
    return found


async def revoke(api, member, owner_key: str) -> None:
    payload = (await api.data(REVOKE, {"id": await key_id(api, member, owner_key)}, owner_key))["revokeApiKey"]
    assert payload["errors"] == [], payload["errors"]


async def revoke_unheard(rt, api, member, owner_key: str) -> None:
    """Revoked through a process that shares only the database: no pub/sub message reaches the
    socket's process, so only the check of each operation can stop the key there."""
    elsewhere = create_app(rt=replace(rt, pubsub=InProcessPubSub(), keys=KeyCache(0)))
    transport = httpx.ASGITransport(app=elsewhere)
    async with httpx.AsyncClient(transport=transport, base_url="http://elsewhere.test") as client:
        await revoke(type(api)(client), member, owner_key)


async def assert_closed_for_the_key(ws: GraphQLSocket) -> None:
    closed = await ws.wait_closed()
    assert closed.code == FORBIDDEN_CLOSE
    if ws.protocol == LEGACY_WS:
        assert ws.connection_error["code"] == "UNAUTHENTICATED"


async def ended(ws: GraphQLSocket, op: str) -> None:
    """The operation got nothing but its end (an UNAUTHENTICATED error, a `complete`), then the
    closed socket."""
    while True:
        message = await ws.next(op)
        if isinstance(message, Closed):
            return
        assert message == "complete" or error_code(message) == "UNAUTHENTICATED", message


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_revoking_a_key_over_http_closes_every_socket_of_that_key_and_ends_its_subscriptions(api, ws_url, protocol):
    mobility = await mobility_network(api)
    partner, owner = mobility.parkspace, mobility.net.owner
    async with (
        GraphQLSocket.open(ws_url, protocol, f"Bearer {partner.key}") as watching,
        GraphQLSocket.open(ws_url, protocol, f"Bearer {partner.key}") as idle,
        GraphQLSocket.open(ws_url, protocol, f"Bearer {owner.key}") as owners,
    ):
        op = await watching.subscribe(UPDATED)
        assert "data" in await watching.next(op)
        mine = await owners.subscribe(UPDATED)
        assert "data" in await owners.next(mine)

        await revoke(api, partner, owner.key)

        await assert_closed_for_the_key(watching)
        await ended(watching, op)
        await assert_closed_for_the_key(idle)
        # another key's socket is left alone
        await api.data(RECORD, {"events": [event(mobility.service_id, "after")]}, mobility.citycar.key)
        assert "data" in await owners.next(mine)
        assert owners.closed is None


OPERATIONS = {
    "query": ("{ me { party { name } } }", None),
    "recordUsage": (RECORD, lambda m: {"events": [event(m.service_id, "sent-after-revocation")]}),
    "issueApiKey": (ISSUE, lambda m: {"party": m.citycar.id}),
    "subscription": (UPDATED, None),
}


@pytest.mark.parametrize(
    ("protocol", "operation"),
    [(TRANSPORT_WS, name) for name in OPERATIONS] + [(LEGACY_WS, "subscription")],
)
async def test_an_operation_sent_on_a_socket_after_its_key_was_revoked_is_not_executed(api, rt, ws_url, protocol, operation):
    mobility = await mobility_network(api)
    provider, owner = mobility.citycar, mobility.net.owner
    query, variables = OPERATIONS[operation]
    async with GraphQLSocket.open(ws_url, protocol, f"Bearer {provider.key}") as ws:
        if protocol == TRANSPORT_WS:
            assert await ws.next(await ws.subscribe(ME)) == {"data": {"me": {"party": {"name": "CityCar"}}}}
        await revoke_unheard(rt, api, provider, owner.key)

        op = await ws.subscribe(query, variables(mobility) if variables else None)
        answer = await ws.next(op)
        assert isinstance(answer, Closed) or error_code(answer) == "UNAUTHENTICATED", answer
        await assert_closed_for_the_key(ws)

    assert (await api.data(EVENTS, key=owner.key))["usageEvents"]["edges"] == []
    keys = (await api.data(KEYS, {"id": provider.id}, owner.key))["party"]["apiKeys"]
    assert len(keys) == 1 and keys[0]["revokedAt"] is not None


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_revocation_the_process_did_not_hear_ends_the_subscription_at_its_next_message(api, rt, ws_url, protocol):
    mobility = await mobility_network(api)
    partner = mobility.parkspace
    async with GraphQLSocket.open(ws_url, protocol, f"Bearer {partner.key}") as ws:
        op = await ws.subscribe(UPDATED)
        await ws.next(op)
        await revoke_unheard(rt, api, partner, mobility.net.owner.key)
        await api.data(RECORD, {"events": rental(mobility.service_id, "after")}, mobility.citycar.key)
        answer = await ws.next(op)
        if not isinstance(answer, Closed):
            assert answer["data"] is None and error_code(answer) == "UNAUTHENTICATED"
            await ended(ws, op)
        await assert_closed_for_the_key(ws)


async def test_a_revocation_the_process_did_not_hear_ends_a_quiet_subscription_too(api, rt, ws_url, monkeypatch):
    monkeypatch.setattr(subscriptions, "REVALIDATE_SECONDS", 0.2)
    mobility = await mobility_network(api)
    partner = mobility.fleetcare
    async with GraphQLSocket.open(ws_url, TRANSPORT_WS, f"Bearer {partner.key}") as ws:
        op = await ws.subscribe(FINALIZED)
        assert await ws.nothing(op, 0.5)
        await revoke_unheard(rt, api, partner, partner.key)
        await assert_closed_for_the_key(ws)
        await ended(ws, op)


@pytest.mark.skipif(not REDIS_URL, reason="set SHAREFLOW_TEST_REDIS_URL to test the revocation through Redis")
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_revocation_through_another_process_closes_the_socket_within_a_second_through_redis(api, rt, protocol):
    mobility = await mobility_network(api)
    partner, owner = mobility.helpdesk, mobility.net.owner
    settings = rt.settings.model_copy(update={"redis_url": REDIS_URL, "rate_limit_per_minute": 0})
    serving, revoking = Runtime.from_settings(settings), Runtime.from_settings(settings)
    port = free_port()
    server, task = await serve(create_app(rt=serving), port)
    try:
        async with GraphQLSocket.open(f"ws://127.0.0.1:{port}/graphql", protocol, f"Bearer {partner.key}") as ws:
            op = await ws.subscribe(UPDATED)
            assert "data" in await ws.next(op)
            transport = httpx.ASGITransport(app=create_app(rt=revoking))
            async with httpx.AsyncClient(transport=transport, base_url="http://other-process.test") as client:
                await revoke(type(api)(client), partner, owner.key)
            revoked = time.monotonic()
            await assert_closed_for_the_key(ws)
            assert time.monotonic() - revoked < 1.0
            await ended(ws, op)
    finally:
        server.should_exit = True
        await task
        await serving.close()
        await revoking.close()


async def test_the_sockets_of_the_keys_a_revoked_key_issued_close_too(api, ws_url, network):
    partner = await network.onboard("Partner")
    issued = (await api.data(ISSUE, {"party": partner.id}, partner.key))["issueApiKey"]["apiKey"]
    issued_by_issued = (await api.data(ISSUE, {"party": partner.id}, issued))["issueApiKey"]["apiKey"]
    async with (
        GraphQLSocket.open(ws_url, TRANSPORT_WS, f"Bearer {issued}") as first,
        GraphQLSocket.open(ws_url, LEGACY_WS, f"Bearer {issued_by_issued}") as second,
    ):
        await revoke(api, partner, network.owner.key)
        await assert_closed_for_the_key(first)
        await assert_closed_for_the_key(second)


@pytest.mark.skipif(not REDIS_URL, reason="set SHAREFLOW_TEST_REDIS_URL to test the revocation through Redis")
async def test_a_key_revoked_on_its_own_socket_takes_the_sockets_of_the_keys_it_issued_with_it(api, rt, network):
    partner = await network.onboard("Partner")
    issued = (await api.data(ISSUE, {"party": partner.id}, partner.key))["issueApiKey"]["apiKey"]
    own = await key_id(api, partner, partner.key)
    serving = Runtime.from_settings(rt.settings.model_copy(update={"redis_url": REDIS_URL, "rate_limit_per_minute": 0}))
    port = free_port()
    server, task = await serve(create_app(rt=serving), port)
    url = f"ws://127.0.0.1:{port}/graphql"
    try:
        async with (
            GraphQLSocket.open(url, TRANSPORT_WS, f"Bearer {partner.key}") as revoking,
            GraphQLSocket.open(url, TRANSPORT_WS, f"Bearer {issued}") as successor,
        ):
            await revoking.subscribe(REVOKE, {"id": own})
            await assert_closed_for_the_key(revoking)
            await assert_closed_for_the_key(successor)
    finally:
        server.should_exit = True
        await task
        await serving.close()


async def test_a_socket_opens_and_works_while_the_pubsub_is_unreachable_and_still_ends_with_its_key(api, rt, network):
    partner = await network.onboard("Partner")
    unreachable = RedisPubSub("redis://127.0.0.1:9/0")
    port = free_port()
    server, task = await serve(create_app(rt=replace(rt, pubsub=unreachable)), port)
    try:
        async with GraphQLSocket.open(f"ws://127.0.0.1:{port}/graphql", TRANSPORT_WS, f"Bearer {partner.key}") as ws:
            assert await ws.next(await ws.subscribe(ME)) == {"data": {"me": {"party": {"name": "Partner"}}}}
            await revoke(api, partner, network.owner.key)  # its news cannot reach the socket
            answer = await ws.next(await ws.subscribe(ME))
            assert isinstance(answer, Closed) or error_code(answer) == "UNAUTHENTICATED", answer
            await assert_closed_for_the_key(ws)
    finally:
        server.should_exit = True
        await task
        await unreachable.close()


async def test_socket_operations_past_the_keys_rate_budget_are_refused_with_rate_limited(api, rt, network):
    port = free_port()
    server, task = await serve(app_with(rt, rate_limit_per_minute=3), port)
    url = f"ws://127.0.0.1:{port}/graphql"
    try:
        async with GraphQLSocket.open(url, TRANSPORT_WS, f"Bearer {network.owner.key}") as ws:
            for _ in range(3):
                assert "data" in await ws.next(await ws.subscribe(ME))
            refused = await ws.next(await ws.subscribe(ME))
            assert isinstance(refused, tuple), refused
            [error] = refused[1]
            assert error["extensions"]["code"] == "RATE_LIMITED"
            assert 0 < error["extensions"]["retryAfterSeconds"] <= 20
        # the same budget, whichever socket or protocol spends it
        async with GraphQLSocket.open(url, LEGACY_WS, f"Bearer {network.owner.key}") as ws:
            assert error_code(await ws.next(await ws.subscribe(UPDATED))) == "RATE_LIMITED"
            assert ws.closed is None
    finally:
        server.should_exit = True
        await task


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_socket_message_larger_than_the_body_limit_closes_the_socket_with_4413(api, rt, network, protocol):
    port = free_port()
    server, task = await serve(app_with(rt, max_body_bytes=2000), port)
    url = f"ws://127.0.0.1:{port}/graphql"
    padded = UPDATED + "#" + "x" * 1500  # just under the limit, whole message included
    try:
        async with GraphQLSocket.open(url, protocol, f"Bearer {network.owner.key}") as ws:
            assert "data" in await ws.next(await ws.subscribe(padded))
            op = await ws.subscribe(UPDATED + "#" + "x" * 2000)
            closed = await ws.wait_closed()
            assert closed.code == TOO_LARGE_CLOSE and "LIMIT_EXCEEDED" in closed.reason
            if protocol == LEGACY_WS:
                assert ws.connection_error["code"] == "LIMIT_EXCEEDED"
            await ended(ws, op)
    finally:
        server.should_exit = True
        await task

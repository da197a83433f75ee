"""Shared fan-out (graph/fanout.py, graph/engine/shared_results.py, app/pubsub.py): subscribers share a message's execution only
when nothing they may see differs, and messages keep their order when their preparation is slow."""

import asyncio

import pytest

from app.pubsub import InProcessPubSub
from tests.graph.conftest import mobility_network
from tests.graph.test_subscriptions import PROTOCOLS, GraphQLSocket, rental, totals, ws_url  # noqa: F401 - fixture
from tests.graph.test_record_usage import record

PARTY = "name agreements { payer { name agreements { payee { name } rule { kind } } } }"
WATCHED = f"""subscription($party: ID) {{
  settlementUpdated(partyId: $party) {{ party {{ {PARTY} }} receivable {{ amount }} payable {{ amount }} net {{ amount }} }}
}}"""
SEEN = f"query($party: ID!) {{ party(id: $party) {{ {PARTY} }} }}"


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_the_owner_and_a_party_watching_the_same_party_each_get_what_their_own_key_may_see(api, ws_url, protocol):
    mobility = await mobility_network(api)
    owner, citycar = mobility.net.owner, mobility.citycar
    async with (
        GraphQLSocket.open(ws_url, protocol, f"Bearer {owner.key}") as owners,
        GraphQLSocket.open(ws_url, protocol, f"Bearer {citycar.key}") as its,
        GraphQLSocket.open(ws_url, protocol, f"Bearer {citycar.key}") as again,
    ):
        # the same document and variables on the same party: only the access differs
        ops = [(ws, await ws.subscribe(WATCHED, {"party": citycar.id})) for ws in (owners, its, again)]
        for ws, op in ops:
            await ws.next(op)
        await record(api, citycar.key, rental(mobility.service_id, "shared"))
        seen_by_owner, seen_by_citycar, seen_again = [(await ws.next(op))["data"]["settlementUpdated"] for ws, op in ops]

    for seen in (seen_by_owner, seen_by_citycar, seen_again):
        assert (seen["receivable"]["amount"], seen["payable"]["amount"], seen["net"]["amount"]) == ("8.25", "0.50", "7.75")
    owner_view = (await api.data(SEEN, {"party": citycar.id}, owner.key))["party"]
    citycar_view = (await api.data(SEEN, {"party": citycar.id}, citycar.key))["party"]
    assert owner_view != citycar_view  # the owner sees the terms of its other agreements; CityCar does not
    assert seen_by_owner["party"] == owner_view
    assert seen_by_citycar["party"] == seen_again["party"] == citycar_view


async def test_messages_keep_their_order_while_one_is_slow_to_prepare():
    pubsub = InProcessPubSub()
    first_prepared = asyncio.Event()
    release = asyncio.Event()

    async def prepare(event) -> None:
        event.memo["prepared"] = True
        if event.data["n"] == 1:
            first_prepared.set()
            await release.wait()

    async with pubsub.subscribe("c", prepare=prepare) as prepared, pubsub.subscribe("c") as plain:
        await pubsub.publish("c", {"n": 1})
        await first_prepared.wait()
        await pubsub.publish("c", {"n": 2})
        await asyncio.sleep(0.05)
        assert prepared.pending() == [] and plain.pending() == []  # nothing overtakes the first
        release.set()
        for inbox in (prepared, plain):
            got = [await inbox.next(1), await inbox.next(1)]
            assert [(e.data["n"], e.memo.get("prepared")) for e in got] == [(1, True), (2, True)]


async def test_an_inbox_waits_as_long_as_each_wait_asks_and_no_longer():
    pubsub = InProcessPubSub()
    async with pubsub.subscribe("c") as inbox:
        loop = asyncio.get_running_loop()
        waiting = asyncio.ensure_future(inbox.next(30))
        await asyncio.sleep(0.05)
        await pubsub.publish("c", {"n": 1})
        assert (await waiting).data == {"n": 1}
        started = loop.time()
        assert await inbox.next(0.1) is None  # a shorter wait after a longer one ends on time
        assert loop.time() - started < 5
        await pubsub.publish("c", {"n": 2})
        assert (await inbox.next(0.1)).data == {"n": 2}

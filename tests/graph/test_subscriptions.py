"""Subscriptions through a real WebSocket: the app served by uvicorn on a free port (in the tests'
event loop, on the tests' database), the `websockets` package as the client, both protocols."""

import asyncio
import contextlib
import json
import os
from decimal import Decimal

import pytest
import uvicorn
import websockets
from websockets.asyncio.client import connect

from app.server.app import create_app
from graph.view import GraphQLApp
from app.pubsub import RedisPubSub
from graph import subscriptions
from tests.graph.conftest import mobility_network, new_network
from tests.graph.test_close_period import CLOSE, NOW, OCTOBER
from tests.graph.test_record_usage import event, record
from tests.graph.test_statement import STATEMENT
from tests.servers import free_port

TRANSPORT_WS = "graphql-transport-ws"
LEGACY_WS = "graphql-ws"
PROTOCOLS = [TRANSPORT_WS, LEGACY_WS]
REDIS_URL = os.environ.get("SHAREFLOW_TEST_REDIS_URL")

UPDATED = """subscription($party: ID) {
  settlementUpdated(partyId: $party) {
    party { name } period currency receivable { amount currency } payable { amount } net { amount }
  }
}"""
FINALIZED = """subscription($party: ID) {
  statementFinalized(partyId: $party) {
    id number status period party { name } receivable { amount } payable { amount } net { amount }
    lines { counterparty { name } direction amount { amount } }
  }
}"""


class Closed(Exception):
    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"socket closed: {code} {reason}")
        self.code = code
        self.reason = reason


class GraphQLSocket:
    """A minimal client of both protocols: `subscribe` returns an id; `next(id)` is the next result
    (`{"data"...}` / `{"errors"...}`), "complete" when the operation ended, ("error", payload)
    for a refused one."""

    def __init__(self, ws, protocol: str) -> None:
        self.ws = ws
        self.protocol = protocol
        self.inbox: dict[str, asyncio.Queue] = {}
        self.pings = 0
        self._ids = 0
        self._reader: asyncio.Task | None = None
        self.closed: Closed | None = None
        self.connection_error: object = None
        "The payload of a `connection_error` the server sent after the handshake (legacy protocol)."

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, url: str, protocol: str, authorization: str | None, origin: str | None = None, init: bool = True):
        headers = {"Origin": origin} if origin else None
        async with connect(url, subprotocols=[protocol], additional_headers=headers, open_timeout=10) as ws:
            client = cls(ws, protocol)
            if init:
                await client.init(authorization)
            try:
                yield client
            finally:
                if client._reader:
                    client._reader.cancel()

    async def init(self, authorization: str | None) -> None:
        payload = {} if authorization is None else {"authorization": authorization}
        await self.ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        while True:
            try:
                message = json.loads(await asyncio.wait_for(self.ws.recv(), 10))
            except websockets.ConnectionClosed as closed:
                raise Closed(closed.rcvd.code if closed.rcvd else None, closed.rcvd.reason if closed.rcvd else "") from None
            if message["type"] == "connection_ack":
                break
            if message["type"] == "connection_error":
                raise Closed(None, json.dumps(message.get("payload")))
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                message = json.loads(raw)
                kind = message["type"]
                if kind == "ping":
                    self.pings += 1
                    await self.ws.send(json.dumps({"type": "pong"}))
                elif kind == "ka":
                    self.pings += 1
                elif kind in ("next", "data"):
                    self._queue(message["id"]).put_nowait(message["payload"])
                elif kind == "error":
                    self._queue(message["id"]).put_nowait(("error", message["payload"]))
                elif kind == "complete":
                    self._queue(message["id"]).put_nowait("complete")
                elif kind == "connection_error":
                    self.connection_error = message.get("payload")
        except websockets.ConnectionClosed:
            pass
        rcvd = self.ws.close_code
        self.closed = Closed(rcvd, self.ws.close_reason or "")
        for queue in self.inbox.values():
            queue.put_nowait(self.closed)

    def _queue(self, id: str) -> asyncio.Queue:
        return self.inbox.setdefault(id, asyncio.Queue())

    async def subscribe(self, query: str, variables: dict | None = None) -> str:
        self._ids += 1
        id = str(self._ids)
        self._queue(id)
        kind = "subscribe" if self.protocol == TRANSPORT_WS else "start"
        await self.ws.send(json.dumps({"id": id, "type": kind, "payload": {"query": query, "variables": variables or {}}}))
        return id

    async def stop(self, id: str) -> None:
        kind = "complete" if self.protocol == TRANSPORT_WS else "stop"
        await self.ws.send(json.dumps({"id": id, "type": kind}))

    async def next(self, id: str, timeout: float = 10):
        return await asyncio.wait_for(self._queue(id).get(), timeout)

    async def wait_closed(self, timeout: float = 10) -> Closed:
        """Until the server closes the socket: how it closed it."""
        await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        return self.closed

    async def nothing(self, id: str, wait: float = 0.3) -> bool:
        """True when no message arrives for `id` within `wait` seconds."""
        try:
            got = await asyncio.wait_for(self._queue(id).get(), wait)
        except TimeoutError:
            return True
        raise AssertionError(f"unexpected message {got!r}")


def error_code(result) -> str:
    """The code of a refusal, whichever way the protocol carries it."""
    if isinstance(result, tuple):  # an "error" message: a list of errors (a single one in graphql-ws)
        errors = result[1] if isinstance(result[1], list) else [result[1]]
    else:
        errors = result["errors"]
    return errors[0]["extensions"]["code"]


async def serve(app, port: int):
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    return server, task


@pytest.fixture
async def ws_url(rt):
    """The app on a real socket, sharing the tests' runtime (lifespan off: the runtime outlives it)."""
    port = free_port()
    server, task = await serve(create_app(rt=rt), port)
    yield f"ws://127.0.0.1:{port}/graphql"
    server.should_exit = True
    await task


def totals(result) -> tuple[str, str, str]:
    update = result["data"]["settlementUpdated"]
    return update["receivable"]["amount"], update["payable"]["amount"], update["net"]["amount"]


def rental(sid: str, prefix: str, **overrides) -> list[dict]:
    return [event(sid, f"{prefix}-m", **overrides), event(sid, f"{prefix}-r", metric="rental", quantity="1", **overrides)]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_partner_receives_its_exact_new_totals_after_usage_is_recorded(api, ws_url, protocol):
    mobility = await mobility_network(api)
    helpdesk, sid = mobility.helpdesk, mobility.service_id
    async with GraphQLSocket.open(ws_url, protocol, f"Bearer {helpdesk.key}") as ws:
        op = await ws.subscribe(UPDATED)
        first = await ws.next(op)
        assert first["data"]["settlementUpdated"]["party"] == {"name": "HelpDesk24"}
        assert totals(first) == ("0.00", "0.00", "0.00")

        await record(api, mobility.citycar.key, rental(sid, "one"))
        update = (await ws.next(op))["data"]["settlementUpdated"]
        # 2% of the 9.70 a rental earns, 40% of that passed on to CallCenter Nord
        assert (update["receivable"], update["payable"]["amount"], update["net"]["amount"]) == (
            {"amount": "0.19", "currency": "EUR"}, "0.08", "0.11",
        )
        draft = (await api.data(STATEMENT, {"party": helpdesk.id, "period": update["period"]}, helpdesk.key))["statement"]
        assert (draft["receivable"]["amount"], draft["payable"]["amount"], draft["net"]["amount"]) == ("0.19", "0.08", "0.11")

        await record(api, mobility.citycar.key, rental(sid, "two"))
        assert totals(await ws.next(op)) == ("0.39", "0.16", "0.23")
        await ws.stop(op)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_the_owner_watches_any_party_of_its_network_and_a_void_is_pushed_too(api, ws_url, protocol):
    mobility = await mobility_network(api)
    sid = mobility.service_id
    async with GraphQLSocket.open(ws_url, protocol, f"Bearer {mobility.net.owner.key}") as ws:
        mine = await ws.subscribe(UPDATED)
        citycar = await ws.subscribe(UPDATED, {"party": mobility.citycar.id})
        assert totals(await ws.next(mine)) == ("0.00", "0.00", "0.00")
        assert (await ws.next(citycar))["data"]["settlementUpdated"]["party"] == {"name": "CityCar"}

        await record(api, mobility.citycar.key, rental(sid, "one"))
        assert totals(await ws.next(mine)) == ("9.70", "9.04", "0.66")
        # 85% of 9.70, 0.50 a rental to FleetCare: what the statement query says too
        update = await ws.next(citycar)
        assert totals(update) == ("8.25", "0.50", "7.75")
        period = update["data"]["settlementUpdated"]["period"]
        draft = (await api.data(STATEMENT, {"party": mobility.citycar.id, "period": period}, mobility.net.owner.key))["statement"]
        assert (draft["receivable"]["amount"], draft["payable"]["amount"], draft["net"]["amount"]) == ("8.25", "0.50", "7.75")

        await api.data("mutation($k: String!) { voidUsage(idempotencyKey: $k) { errors { code } } }", {"k": "one-r"}, mobility.citycar.key)
        receivable, payable, net = totals(await ws.next(mine))
        assert receivable == "8.70" and Decimal(receivable) - Decimal(payable) == Decimal(net)


@pytest.fixture(params=["in-process", "redis"])
async def pubsub(request, rt):
    """The runtime's pub/sub, or for this test Redis (the process stops hearing a channel nobody
    here listens to)."""
    if request.param == "in-process":
        yield rt.pubsub
        return
    if not REDIS_URL:
        pytest.skip("set SHAREFLOW_TEST_REDIS_URL to test subscriptions through Redis")
    saved, rt.pubsub = rt.pubsub, RedisPubSub(REDIS_URL)
    try:
        yield rt.pubsub
    finally:
        await rt.pubsub.close()
        rt.pubsub = saved


async def test_a_subscription_starts_from_the_totals_at_its_start_not_an_earlier_ones(api, pubsub, ws_url):
    mobility = await mobility_network(api)
    sid = mobility.service_id
    async with GraphQLSocket.open(ws_url, TRANSPORT_WS, f"Bearer {mobility.net.owner.key}") as ws:
        early = [await ws.subscribe(UPDATED, {"party": mobility.citycar.id}) for _ in range(3)]
        for op in early:
            assert totals(await ws.next(op)) == ("0.00", "0.00", "0.00")
        await record(api, mobility.citycar.key, rental(sid, "one"))
        for op in early:
            assert totals(await ws.next(op)) == ("8.25", "0.50", "7.75")
        late = await ws.subscribe(UPDATED, {"party": mobility.citycar.id})
        assert totals(await ws.next(late)) == ("8.25", "0.50", "7.75")
        for op in (*early, late):  # nobody listens while the next change is made
            await ws.stop(op)
        await asyncio.sleep(0.2)
        await record(api, mobility.citycar.key, rental(sid, "two"))
        again = await ws.subscribe(UPDATED, {"party": mobility.citycar.id})
        assert totals(await ws.next(again)) == ("16.49", "1.00", "15.49")


async def test_no_message_when_a_change_leaves_the_partys_totals_as_they_were(api, ws_url):
    mobility = await mobility_network(api)
    other = await mobility.net.service("Scooters", mobility.citycar, [{"metric": "minutes", "model": "PER_UNIT", "unitPrice": "0.10"}])
    async with GraphQLSocket.open(ws_url, TRANSPORT_WS, f"Bearer {mobility.parkspace.key}") as ws:
        op = await ws.subscribe(UPDATED)
        await ws.next(op)
        await record(api, mobility.citycar.key, [event(other, "scooter-1")])
        assert await ws.nothing(op)
        await record(api, mobility.citycar.key, rental(mobility.service_id, "car"))
        assert totals(await ws.next(op)) == ("0.60", "0.00", "0.60")  # 0.02 a minute, 30 minutes


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_partner_may_not_watch_another_party_nor_anyone_another_network(api, ws_url, protocol):
    mobility = await mobility_network(api)
    elsewhere = await new_network(api, "Elsewhere")
    async with GraphQLSocket.open(ws_url, protocol, f"Bearer {mobility.helpdesk.key}") as ws:
        # CallCenter Nord is in HelpDesk24's value chain: it may see it, not watch its money
        op = await ws.subscribe(UPDATED, {"party": mobility.callcenter.id})
        assert error_code(await ws.next(op)) == "FORBIDDEN"
        op = await ws.subscribe(FINALIZED, {"party": mobility.net.owner.id})
        assert error_code(await ws.next(op)) == "FORBIDDEN"
        op = await ws.subscribe(UPDATED, {"party": elsewhere.owner.id})
        assert error_code(await ws.next(op)) == "NOT_FOUND"
        op = await ws.subscribe(UPDATED, {"party": "not-an-id"})
        assert error_code(await ws.next(op)) == "NOT_FOUND"
    async with GraphQLSocket.open(ws_url, protocol, f"Bearer {mobility.net.owner.key}") as ws:
        op = await ws.subscribe(UPDATED, {"party": elsewhere.owner.id})
        assert error_code(await ws.next(op)) == "NOT_FOUND"
    async with GraphQLSocket.open(ws_url, protocol, f"Bearer {elsewhere.owner.key}") as ws:
        # the other network's owner hears nothing of this network's usage
        op = await ws.subscribe(UPDATED)
        assert totals(await ws.next(op)) == ("0.00", "0.00", "0.00")
        await record(api, mobility.citycar.key, rental(mobility.service_id, "x"))
        assert await ws.nothing(op)


async def test_the_operator_key_connects_but_watches_nothing(api, ws_url):
    from tests.conftest import OPERATOR_KEY

    async with GraphQLSocket.open(ws_url, TRANSPORT_WS, f"Bearer {OPERATOR_KEY}") as ws:
        op = await ws.subscribe(UPDATED)
        assert error_code(await ws.next(op)) == "FORBIDDEN"


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("authorization", [None, "Bearer sf_000000000000_unknown", "Basic abc", "Bearer sf_000000000000_\ud800", "Bearer \udc00"])
async def test_a_connection_without_a_working_key_is_refused(ws_url, protocol, authorization):
    with pytest.raises(Closed) as refused:
        async with GraphQLSocket.open(ws_url, protocol, authorization):
            pass
    if protocol == TRANSPORT_WS:
        assert refused.value.code == 4403


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_subscribing_before_connection_init_is_refused(ws_url, protocol):
    async with GraphQLSocket.open(ws_url, protocol, None, init=False) as ws:
        kind = "subscribe" if protocol == TRANSPORT_WS else "start"
        await ws.ws.send(json.dumps({"id": "1", "type": kind, "payload": {"query": UPDATED}}))
        with pytest.raises(websockets.ConnectionClosed) as closed:
            while True:
                await asyncio.wait_for(ws.ws.recv(), 10)
        assert closed.value.rcvd.code == 4401


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_statement_finalized_after_close_period(api, rt, ws_url, protocol):
    rt.clock = lambda: NOW
    mobility = await mobility_network(api, first_period="2026-10")
    owner, helpdesk = mobility.net.owner, mobility.helpdesk
    await record(api, mobility.citycar.key, rental(mobility.service_id, "oct", occurredAt=OCTOBER))
    async with (
        GraphQLSocket.open(ws_url, protocol, f"Bearer {helpdesk.key}") as partner,
        GraphQLSocket.open(ws_url, protocol, f"Bearer {owner.key}") as owners,
    ):
        mine = await partner.subscribe(FINALIZED)
        theirs = await owners.subscribe(FINALIZED, {"party": mobility.citycar.id})
        await asyncio.sleep(0.2)  # both listening
        payload = (await api.data(CLOSE, {"p": "2026-10"}, owner.key))["closePeriod"]
        assert payload["errors"] == []

        final = (await partner.next(mine))["data"]["statementFinalized"]
        assert (final["status"], final["period"], final["party"]) == ("FINAL", "2026-10", {"name": "HelpDesk24"})
        assert final["number"].startswith("ST-2026-10-")
        assert (final["receivable"]["amount"], final["payable"]["amount"], final["net"]["amount"]) == ("0.19", "0.08", "0.11")
        assert {(l["counterparty"]["name"], l["direction"]) for l in final["lines"]} == {
            ("Mobility owner", "IN"), ("CallCenter Nord", "OUT"),
        }
        same = (await api.data(STATEMENT, {"party": helpdesk.id, "period": "2026-10"}, helpdesk.key))["statement"]
        assert (same["id"], same["number"]) == (final["id"], final["number"])

        citycar = (await owners.next(theirs))["data"]["statementFinalized"]
        assert (citycar["party"], citycar["net"]["amount"]) == ({"name": "CityCar"}, "7.75")
        assert await partner.nothing(mine)


async def test_the_subscriptions_of_one_connection_are_bounded(api, ws_url, network):
    async with GraphQLSocket.open(ws_url, TRANSPORT_WS, f"Bearer {network.owner.key}") as ws:
        ops = [await ws.subscribe(UPDATED) for _ in range(subscriptions.MAX_SUBSCRIPTIONS_PER_CONNECTION)]
        for op in ops:
            await ws.next(op)
        refused = await ws.subscribe(UPDATED)
        result = await ws.next(refused)
        assert isinstance(result, tuple) and "limit" in result[1][0]["message"]
        await ws.stop(ops[0])
        await asyncio.sleep(0.1)
        again = await ws.subscribe(UPDATED)
        assert "data" in await ws.next(again)


async def test_queries_over_the_socket_get_fresh_loaders_each_time(api, rt, ws_url, network):
    query = "query($id: ID!) { party(id: $id) { name } }"
    rename = await network.onboard("Before")
    async with GraphQLSocket.open(ws_url, TRANSPORT_WS, f"Bearer {network.owner.key}") as ws:
        op = await ws.subscribe(query, {"id": rename.id})
        assert await ws.next(op) == {"data": {"party": {"name": "Before"}}}
        assert await ws.next(op) == "complete"
        from models import Party
        from graph.ids import decode_id

        async with rt.sessions() as session:
            party = await session.get(Party, decode_id(rename.id, "Party"))
            party.name = "After"
            await session.commit()
        op = await ws.subscribe(query, {"id": rename.id})
        assert await ws.next(op) == {"data": {"party": {"name": "After"}}}


async def test_keep_alive_pings_on_the_legacy_protocol(api, rt, network, monkeypatch):
    port = free_port()
    app = create_app(rt=rt)
    views = {route.app for route in app.routes if isinstance(getattr(route, "app", None), GraphQLApp)}
    assert views
    for view in views:
        view.keep_alive_interval = 0.1
    server, task = await serve(app, port)
    try:
        async with GraphQLSocket.open(f"ws://127.0.0.1:{port}/graphql", LEGACY_WS, f"Bearer {network.owner.key}") as ws:
            await asyncio.sleep(0.5)
            assert ws.pings >= 2
    finally:
        server.should_exit = True
        await task


async def test_a_browser_on_another_origin_needs_the_setting(rt, network):
    port = free_port()
    rt_settings = rt.settings
    allowed = rt_settings.model_copy(update={"allowed_origins": ["https://partner.example"]})
    rt.settings = allowed
    try:
        app = create_app(rt=rt)
    finally:
        rt.settings = rt_settings
    server, task = await serve(app, port)
    url = f"ws://127.0.0.1:{port}/graphql"
    try:
        async with GraphQLSocket.open(url, TRANSPORT_WS, f"Bearer {network.owner.key}", origin="https://partner.example") as ws:
            assert "data" in await ws.next(await ws.subscribe(UPDATED))
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with GraphQLSocket.open(url, TRANSPORT_WS, f"Bearer {network.owner.key}", origin="https://evil.example"):
                pass
        assert refused.value.response.status_code == 403
    finally:
        server.should_exit = True
        await task

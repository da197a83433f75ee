"""The socket outlet: a subscription's later messages with plain shared data go from the operation
straight to its socket, in the protocol's own message shape.

What it saves: graphql-core mapping the stream and strawberry handling each result again for every
subscriber of a fan-out; each message's head is encoded once per operation and its data once per
shared result (graph/engine/shared_results.py). Strawberry would add nothing to such a message: no
extension of the schema reports results. The first message of a subscription, and any with errors,
go the whole way through strawberry.

What it relies on: strawberry's protocol handlers (BaseGraphQLTransportWSHandler.run_operation and
`operation.completed`, BaseGraphQLWSHandler.handle_async_results), its ASGIWebSocketAdapter's `view`
and the raw starlette socket behind it (`websocket.ws.send_text`), and the message shapes of both
protocols. Tested on the versions pinned in pyproject.toml; tests/graph/test_engine_switch.py
compares the messages with strawberry's own handlers'."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

from starlette.websockets import WebSocketDisconnect
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.http.exceptions import WebSocketDisconnected

from graph.engine.shared_results import OUTLET, SharedData, SharedSubscriptionResults, encode
from graph.fanout import SharedComputation
from graph.sockets import KeyBoundLegacyWS, KeyBoundTransportWS


class _Outlet:
    """Where a subscription operation's messages go: once its first message went the whole way
    through strawberry (which gave us its executor), a message whose result is plain shared data
    is sent from here as the protocol would send it; one with errors still takes the whole way."""

    __slots__ = ("executor", "head", "live", "websocket")

    def __init__(self, websocket: ASGIWebSocketAdapter, message: dict[str, str], live: Callable[[], bool]) -> None:
        self.websocket = websocket
        self.head = encode(websocket, message)[:-1] + ',"payload":{"data":'
        self.live = live
        self.executor: SharedSubscriptionResults | None = None

    async def deliver(self, payload: object) -> bool:
        """True when the message for `payload` was taken care of here."""
        executor = self.executor
        if executor is None:
            return False
        result = executor.shared_result(payload)
        if isinstance(result, SharedComputation):
            result = await result.result()
        if result is None or result.errors or result.extensions or type(result.data) is not SharedData:
            return False
        if self.live():  # as strawberry: nothing more once the operation completed
            text = f"{self.head}{result.data.encoded(self.websocket)}}}}}"
            try:
                await self.websocket.ws.send_text(text)
            except WebSocketDisconnect as exc:
                raise WebSocketDisconnected from exc
        return True


async def delivered(stream: AsyncIterator[Any]) -> AsyncGenerator[Any, None]:
    """A subscription's source stream, its payloads sent through the operation's outlet where
    they can be: only the others (the first, those with errors) go on to graphql-core. Without an
    outlet (the overrides off) every payload goes on."""
    outlet = OUTLET.get()
    async with contextlib.aclosing(stream):
        async for payload in stream:
            if outlet is None or not await outlet.deliver(payload):
                yield payload


class TransportWSHandler(KeyBoundTransportWS):
    """graphql-transport-ws bound to its key (graph/sockets.py), each operation with its outlet
    (`next` messages)."""

    async def run_operation(self, operation) -> None:
        OUTLET.set(_Outlet(self.websocket, {"id": operation.id, "type": "next"}, lambda: not operation.completed))
        await super().run_operation(operation)


class LegacyWSHandler(KeyBoundLegacyWS):
    """The legacy graphql-ws bound to its key (graph/sockets.py), each operation with its outlet
    (`data` messages)."""

    async def handle_async_results(self, operation_id, query, operation_name, variables) -> None:
        OUTLET.set(_Outlet(self.websocket, {"type": "data", "id": operation_id}, lambda: True))
        await super().handle_async_results(operation_id, query, operation_name, variables)

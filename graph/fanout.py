"""One execution and one JSON text per subscription message for all the subscribers that would
get the same result, and a short way from the subscription's stream to its socket.

A change reaches every subscriber of its network at once, and a thousand subscribers of one party
running the same operation would otherwise each execute the selection set on the same payload,
encode the same data and take each message through graphql-core's and strawberry's layers: what
makes a fan-out slow is that repetition, not the computation behind it (graph/subscriptions.py
already shares that through `pubsub.Event.memo`).

A result is shared only between subscribers with the same
- payload object (the subscription stream yields one object per change and totals),
- parsed document (the parser cache gives one object per query text), operation name and variables,
- access (`same_access`: the principal without its key id; what every resolver filters by),
and only when it has no errors: an error carries its subscriber's request id, so each subscriber
with an error gets an execution of its own.

The first message of a subscription, and any with errors, go the whole way through strawberry;
later ones with plain shared data go from the operation's `_Outlet` straight to its socket, in the
protocol's own message shape (strawberry would add nothing to them: no extension of the schema
reports results).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import dataclasses
import json
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from graphql import ExecutionResult, OperationType
from starlette.websockets import WebSocketDisconnect
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from app.auth import Principal
from graph.execution import CompiledListVariables, PlainLeaves
from graph.sockets import KeyBoundLegacyWS, KeyBoundTransportWS

_ACCESS: dict[Principal, Principal] = {}


def same_access(principal: Principal) -> Principal:
    """The principal without its key id: what access depends on, so that subscribers with
    different keys of the same party share a computation."""
    same = _ACCESS.get(principal)
    if same is None:
        if len(_ACCESS) > 10_000:
            _ACCESS.clear()
        same = _ACCESS[principal] = dataclasses.replace(principal, key_id=None)
    return same


class SharedComputation:
    """One shared computation and the subscribers waiting for it: each waits on a future of its
    own (its cancellation cancels only that), all woken by one callback; once it is done, a
    subscriber takes the result without suspending."""

    __slots__ = ("task", "waiters")

    def __init__(self, task: asyncio.Future) -> None:
        self.task = task
        self.waiters: list[asyncio.Future] = []
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Future) -> None:
        if not task.cancelled():
            task.exception()  # retrieved: raised to the subscribers, not logged as lost
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.waiters.clear()

    async def result(self) -> Any:
        task = self.task
        if not task.done():
            waiter = task.get_loop().create_future()
            self.waiters.append(waiter)
            await waiter
        return task.result()


class SharedData(dict):
    """The `data` of a result shared by subscribers: encoded to JSON once, by the first socket
    that sends it."""

    __slots__ = ("_text",)

    def encoded(self, websocket: ASGIWebSocketAdapter) -> str:
        text = getattr(self, "_text", None)
        if text is None:
            text = self._text = _encode(websocket, self)
        return text


_PAYLOADS_KEPT = 1024
"Payloads whose shared results are kept: a change has one per party and access watched here."

_RESULTS: collections.OrderedDict[int, tuple[object, dict[tuple, Any]]] = collections.OrderedDict()
"id(payload) -> (the payload, kept alive so that its id is not reused; its results by operation and access)."


def _results_of(payload: object) -> dict[tuple, Any]:
    entry = _RESULTS.get(id(payload))
    if entry is None or entry[0] is not payload:
        if len(_RESULTS) >= _PAYLOADS_KEPT:
            _RESULTS.popitem(last=False)
        entry = _RESULTS[id(payload)] = (payload, {})
    return entry[1]


class _Operation:
    """What a subscription's results depend on besides the payload and the access: its document
    (by identity, kept alive), operation and variables."""

    __slots__ = ("document", "key")

    def __init__(self, document, operation_name: str | None, variables: Mapping[str, Any] | None) -> None:
        self.document = document
        self.key = (id(document), operation_name, json.dumps(variables or {}, sort_keys=True, separators=(",", ":")))


class SharingExecutor(PlainLeaves, CompiledListVariables, StrawberryGraphQLCoreExecutionContext):
    """Strawberry's executor, with one execution per subscription message shared as above, plain
    fields read at once and list variables coerced by compiled coercers (graph.execution), each
    answering what the whole way answers. Queries and mutations run as before otherwise."""

    shared_operation: _Operation | None = None

    @classmethod
    def build(cls, schema, document, root_value=None, context_value=None, raw_variable_values=None,
              operation_name=None, *args, **kwargs):
        executor = super().build(schema, document, root_value, context_value, raw_variable_values, operation_name,
                                 *args, **kwargs)
        if isinstance(executor, cls) and executor.operation.operation is OperationType.SUBSCRIPTION:
            try:
                executor.shared_operation = _Operation(document, operation_name, raw_variable_values)
            except (TypeError, ValueError):  # variables that are not plain JSON: nothing shared
                pass
        return executor

    def execute_operation(self, serially: bool | None = None):
        if self.shared_operation is None:
            return super().execute_operation(serially)
        outlet = _OUTLET.get()
        if outlet is not None and outlet.executor is None:
            outlet.executor = self
        shared = self.shared_result(self.root_value)
        if shared is None:  # not shareable, or its errors are this subscriber's own
            return super().execute_operation(serially)
        if isinstance(shared, ExecutionResult):
            return shared
        return self._await(shared, serially)

    def shared_result(self, payload: object) -> ExecutionResult | SharedComputation | None:
        """The shared result for `payload` (a computation to await while it runs), without a
        per-event executor unless this subscriber is the first to ask; None when there is
        nothing to share (no principal, or an execution with errors)."""
        principal = getattr(self.context_value, "principal", None)
        if principal is None:
            return None
        results = _results_of(payload)
        key = (self.shared_operation.key, same_access(principal))
        shared = results.get(key)
        if shared is None:
            result = super(SharingExecutor, self.build_per_event_executor(payload)).execute_operation(False)
            if self.is_awaitable(result):
                shared = results[key] = SharedComputation(asyncio.ensure_future(_shareable_later(result)))
            else:
                shared = results[key] = _shareable(result)
        if isinstance(shared, ExecutionResult) and shared.errors:
            return None
        return shared

    async def _await(self, shared: SharedComputation, serially: bool | None) -> ExecutionResult:
        result = await shared.result()
        if result.errors:  # an execution of its own: its errors carry this subscriber's request
            result = super().execute_operation(serially)
            if self.is_awaitable(result):
                result = await result
        return result


def _shareable(result: ExecutionResult) -> ExecutionResult:
    if result.errors or type(result.data) is not dict:
        return result
    return ExecutionResult(SharedData(result.data), extensions=result.extensions)


async def _shareable_later(result: Awaitable[ExecutionResult]) -> ExecutionResult:
    return _shareable(await result)


class _Outlet:
    """Where a subscription operation's messages go: once its first message went the whole way
    through strawberry (which gave us its executor), a message whose result is plain shared data
    is sent from here as the protocol would send it (its head encoded once per operation, its data
    once per result), without graphql-core mapping the stream and strawberry handling each result
    again; one with errors still takes the whole way."""

    __slots__ = ("executor", "head", "live", "websocket")

    def __init__(self, websocket: ASGIWebSocketAdapter, message: dict[str, str], live: Callable[[], bool]) -> None:
        self.websocket = websocket
        self.head = _encode(websocket, message)[:-1] + ',"payload":{"data":'
        self.live = live
        self.executor: SharingExecutor | None = None

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


def _encode(websocket: ASGIWebSocketAdapter, message: object) -> str:
    text = websocket.view.encode_json(message)
    return text.decode() if isinstance(text, bytes) else text


_OUTLET: contextvars.ContextVar[_Outlet | None] = contextvars.ContextVar("shareflow_outlet", default=None)
"The outlet of the operation whose task this is (set by the protocol handlers below)."


async def delivered(stream: AsyncIterator[Any]) -> AsyncGenerator[Any, None]:
    """A subscription's source stream, its payloads sent through the operation's outlet where
    they can be: only the others (the first, those with errors) go on to graphql-core."""
    outlet = _OUTLET.get()
    async with contextlib.aclosing(stream):
        async for payload in stream:
            if outlet is None or not await outlet.deliver(payload):
                yield payload


class TransportWSHandler(KeyBoundTransportWS):
    """graphql-transport-ws bound to its key (graph/sockets.py), each operation with its outlet
    (`next` messages)."""

    async def run_operation(self, operation) -> None:
        _OUTLET.set(_Outlet(self.websocket, {"id": operation.id, "type": "next"}, lambda: not operation.completed))
        await super().run_operation(operation)


class LegacyWSHandler(KeyBoundLegacyWS):
    """The legacy graphql-ws bound to its key (graph/sockets.py), each operation with its outlet
    (`data` messages)."""

    async def handle_async_results(self, operation_id, query, operation_name, variables) -> None:
        _OUTLET.set(_Outlet(self.websocket, {"type": "data", "id": operation_id}, lambda: True))
        await super().handle_async_results(operation_id, query, operation_name, variables)

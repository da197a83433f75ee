"""SharedSubscriptionResults: one execution of a subscription message for all the subscribers that
would get the same result.

What it saves: a change reaches every subscriber of its network at once, and a thousand
subscribers of one party running the same operation would otherwise each execute the selection set
on the same payload and encode the same data (graph/subscriptions.py already shares the computation
behind it through `pubsub.Event.memo`).

A result is shared only between subscribers with the same
- payload object (the subscription stream yields one object per change and totals),
- parsed document (the parser cache gives one object per query text), operation name and variables,
- access (`fanout.same_access`: the principal without its key id; what every resolver filters by),
and only when it has no errors: an error carries its subscriber's request id, so each subscriber
with an error gets an execution of its own.

What it relies on: graphql-core's ExecutionContext.build, execute_operation,
build_per_event_executor and is_awaitable (graphql-core 3.3) and strawberry's executor class
(StrawberryGraphQLCoreExecutionContext). Tested on the versions pinned in pyproject.toml;
tests/graph/test_subscriptions_fanout.py and tests/graph/test_engine_switch.py compare answers."""

from __future__ import annotations

import asyncio
import collections
import contextvars
import json
from collections.abc import Awaitable, Mapping
from typing import Any

from graphql import ExecutionResult, OperationType
from strawberry.asgi import ASGIWebSocketAdapter

from graph.fanout import SharedComputation, same_access


class SharedData(dict):
    """The `data` of a result shared by subscribers: encoded to JSON once, by the first socket
    that sends it."""

    __slots__ = ("_text",)

    def encoded(self, websocket: ASGIWebSocketAdapter) -> str:
        text = getattr(self, "_text", None)
        if text is None:
            text = self._text = encode(websocket, self)
        return text


def encode(websocket: ASGIWebSocketAdapter, message: object) -> str:
    """`message` as the view encodes JSON."""
    text = websocket.view.encode_json(message)
    return text.decode() if isinstance(text, bytes) else text


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


OUTLET: contextvars.ContextVar[Any] = contextvars.ContextVar("shareflow_outlet", default=None)
"The outlet (graph/engine/socket_outlet.py) of the operation whose task this is, if any."


class _Operation:
    """What a subscription's results depend on besides the payload and the access: its document
    (by identity, kept alive), operation and variables."""

    __slots__ = ("document", "key")

    def __init__(self, document, operation_name: str | None, variables: Mapping[str, Any] | None) -> None:
        self.document = document
        self.key = (id(document), operation_name, json.dumps(variables or {}, sort_keys=True, separators=(",", ":")))


class SharedSubscriptionResults:
    """An executor mixin: a subscription's message is executed once per payload, operation and
    access (see above), the others taking the shared result. Queries and mutations run as before."""

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
        outlet = OUTLET.get()
        if outlet is not None and outlet.executor is None:
            outlet.executor = self  # its later messages are sent through this executor
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
            result = super(SharedSubscriptionResults, self.build_per_event_executor(payload)).execute_operation(False)
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

"""The fast path: a query whose text is known valid, POSTed as plain JSON, goes straight to
graphql-core, and its answer (errors included) is shaped the way strawberry's path shapes it.

What it saves: the HTTP view's negotiation and the extensions' per-request hooks, which are what
small queries cost (parsing and validation are cached already); for a known query without
directives, collecting the same subfields again for every request; and for the body the fast path
decoded before handing a request on (a mutation, an unknown text), strawberry's view decoding it a
second time (a batch of 1,000 events is 3 ms of JSON).

What it relies on: graphql-core's Executor (its collect_subfields, and no incremental delivery in
the schema), strawberry's StrawberryGraphQLCoreExecutionContext.build_resolve_info, its
`Schema._schema`, `Schema.process_errors` and `Schema.extensions`, and the view's get_context,
get_root_value, get_sub_response, create_response, process_result, encode_json and decode_json.
The fast path runs only while every extension of the schema is one it accounts for
(FAST_PATH_EXTENSIONS); another makes it log a WARNING at start-up and stay off. Tested on the
versions pinned in pyproject.toml; tests/graph/test_known_queries.py compares its answers with
strawberry's."""

import contextvars
import json
import time

from graphql import OperationType, execute, get_operation_ast
from graphql.execution import Executor
from starlette.requests import Request
from strawberry.execution.is_awaitable import optimized_is_awaitable
from strawberry.extensions import AddValidationRules, MaxTokensLimiter, ParserCache, ValidationCache
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.types import ExecutionContext

from app.observability import OPERATIONS
from graph.engine.list_variables import CompiledListVariables
from graph.engine.plain_leaves import PlainLeaves
from graph.extensions import (
    PREPARED, AuthenticationGate, ErrorShaping, OperationMetrics, SubscriptionsOverWebSocket, operation_name_of,
    shape_error,
)

FAST_PATH_EXTENSIONS = {
    AuthenticationGate, ErrorShaping, OperationMetrics, SubscriptionsOverWebSocket, AddValidationRules, MaxTokensLimiter,
    ParserCache, ValidationCache,
}
"""The extensions the fast path accounts for: document-level ones (they only parse and validate,
and a known document has passed them), the authentication gate (the fast path takes only a
caller with a principal), the error shaping it applies itself, and the metrics it records itself."""

_JSON = (b"application/json", b"application/json; charset=utf-8", b"application/json;charset=utf-8")
_ACCEPT_JSON = (None, b"*/*", b"application/json")


def unknown_extension(schema) -> str | None:
    """The name of the first extension of `schema` the fast path does not account for, or None."""
    for factory in schema.extensions:
        extension = factory() if callable(factory) and not isinstance(factory, type) else factory
        kind = extension if isinstance(extension, type) else type(extension)
        if kind not in FAST_PATH_EXTENSIONS:
            return kind.__name__
    return None


class KnownQueryExecutor(PlainLeaves, CompiledListVariables, Executor):
    """graphql-core's executor without the bookkeeping of incremental delivery, which a schema
    without @defer and @stream never uses, with strawberry's resolve info (what its own executor
    adds) and plain leaf fields read at once (graph/engine/plain_leaves.py). `subfields` is the
    memo of a known query without directives, whose subfields depend on its nodes alone: they are
    collected once for all its requests (the memo keeps the nodes alive)."""

    operation_extensions = None
    build_resolve_info = StrawberryGraphQLCoreExecutionContext.build_resolve_info

    def __init__(self, *args, subfields: dict | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.subfields = subfields

    def collect_subfields(self, return_type, field_details_list):
        memo = self.subfields
        if memo is None:
            return super().collect_subfields(return_type, field_details_list)
        key = (return_type, *[id(details.node) for details in field_details_list])
        cached = memo.get(key)
        if cached is None:
            cached = memo[key] = (field_details_list, super().collect_subfields(return_type, field_details_list))
        return cached[1]


_PREPARED_QUERIES: dict[tuple[str, str | None], tuple] = {}
"(text, operation name) -> (the document it was worked out for, what `_prepared_query` gives)."


def _prepared_query(query: str, operation_name: str | None):
    """For a known valid query text and operation name: (document, its name for the metrics, its
    subfields memo), or None when the text is not known valid (any more) or the operation is not
    a query. Worked out once per document: validity depends on the text alone."""
    document = PREPARED.get(query)
    if document is None:
        return None
    key = (query, operation_name)
    cached = _PREPARED_QUERIES.get(key)
    if cached is not None and cached[0] is document:
        return cached[1]
    operation = get_operation_ast(document, operation_name)
    prepared = None
    if operation is not None and operation.operation is OperationType.QUERY:
        prepared = (document, operation_name_of(document, operation_name), {} if "@" not in query else None)  # no "@", no directive
    if len(_PREPARED_QUERIES) >= 1024:
        del _PREPARED_QUERIES[next(iter(_PREPARED_QUERIES))]  # the oldest: the others stay fast
    _PREPARED_QUERIES[key] = (document, prepared)
    return prepared


_DECODED: contextvars.ContextVar[tuple[bytes, object] | None] = contextvars.ContextVar("shareflow_decoded", default=None)
"The body the fast path decoded before handing the request on, and what it decoded to."


def decoded(data: str | bytes) -> tuple[object] | None:
    """(what `data` decodes to,) where the fast path decoded this very body in this request's
    task (each request runs in its own), else None."""
    body = _DECODED.get()
    if body is not None and body[0] == data:  # the same body: nothing of it was changed on the way
        return (body[1],)
    return None


async def answer(view, scope, receive, send):
    """Answers a query whose text is known valid, POSTed as plain JSON, with an authenticated
    caller, and returns None; anything else (a new text, a mutation, variables of the wrong shape,
    other content types, no working key) is left to strawberry's view: returns the `receive` to
    hand on."""
    content_type = accept = None
    for name, value in scope["headers"]:
        if name == b"content-type":
            content_type = value
        elif name == b"accept":
            accept = value
    if content_type not in _JSON or accept not in _ACCEPT_JSON:
        return receive
    request = Request(scope, receive)
    body = await request.body()
    replayed = False

    async def replay():
        nonlocal replayed
        if not replayed:
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        return replay
    _DECODED.set((body, data))
    if type(data) is not dict:
        return replay
    query = data.get("query")
    variables = data.get("variables")
    operation_name = data.get("operationName")
    if (
        type(query) is not str
        or data.get("extensions")
        or not (variables is None or type(variables) is dict)
        or not (operation_name is None or type(operation_name) is str)
        or len(data) > 4
    ):
        return replay
    prepared = _prepared_query(query, operation_name)
    if prepared is None:
        return replay
    document, name, subfields = prepared
    started = time.perf_counter()
    sub_response = await view.get_sub_response(request)
    context = await view.get_context(request, sub_response)
    if context.principal is None:
        return replay  # the authentication gate answers
    schema = view.schema
    result = execute(
        schema._schema,
        document,
        root_value=await view.get_root_value(request),
        context_value=context,
        variable_values=variables,
        operation_name=operation_name,
        is_awaitable=optimized_is_awaitable,
        executor_class=KnownQueryExecutor,
        subfields=subfields,
    )
    if optimized_is_awaitable(result):
        result = await result
    if result.errors:  # as strawberry's path: logged as they came, then shaped (ErrorShaping)
        schema.process_errors(result.errors, ExecutionContext(
            query=query, schema=schema, allowed_operations=(), context=context, variables=variables,
            provided_operation_name=operation_name,
        ))
        result.errors = [shape_error(error, context.request_id) for error in result.errors]
        response_data = await view.process_result(request, result)
    else:
        response_data = {"data": result.data}
    if sub_response.status_code is None and not sub_response.headers.raw and sub_response.background is None:
        # What create_response would build, without building it: most answers set nothing else.
        payload = view.encode_json(response_data).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-length", str(len(payload)).encode()), (b"content-type", b"application/json"),
        ]})
        await send({"type": "http.response.body", "body": payload})
    else:
        response = view.create_response(response_data=response_data, sub_response=sub_response)
        await response(scope, replay, send)
    # What OperationMetrics records on strawberry's path (the caller is authenticated by now).
    OPERATIONS.labels(operation=view.rt.operation_labels.label(name, True), type="query").observe(time.perf_counter() - started)
    return None

"""The GraphQL HTTP and WebSocket view: strawberry's ASGI view with the caller Admission identified,
JSON for every refusal, application/graphql-response+json when asked for, and a fast path that
answers known valid queries straight through graphql-core."""

import contextvars
import json
import logging
import time

from cross_web import HTTPException
from graphql import GraphQLError, OperationType, execute, get_operation_ast
from graphql.execution import Executor
from starlette.requests import Request
from starlette.responses import JSONResponse
from strawberry.asgi import GraphQL
from strawberry.execution.is_awaitable import optimized_is_awaitable
from strawberry.extensions import AddValidationRules, MaxTokensLimiter, ParserCache, ValidationCache
from strawberry.http import process_result
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.types.execution import PreExecutionError
from strawberry.types.unset import UNSET

from app.limits import LimitExceeded, RateLimiter, admitted_caller, limit_body
from app.observability import OPERATIONS
from app.runtime import Runtime
from graph import fanout, sockets, subscriptions
from graph.context import Context
from graph.execution import CompiledListVariables, PlainLeaves
from graph.extensions import (
    PREPARED, AuthenticationGate, ErrorShaping, OperationMetrics, SubscriptionsOverWebSocket, operation_name_of,
)
from graph.schema import schema

log = logging.getLogger("shareflow.graphql")

# The extensions the fast path knows to be document-level (they only parse and validate, and a
# prepared document has passed them) or to have nothing to do on a successful, authenticated query.
_FAST_PATH_EXTENSIONS = {
    AuthenticationGate, ErrorShaping, OperationMetrics, SubscriptionsOverWebSocket, AddValidationRules, MaxTokensLimiter, ParserCache, ValidationCache,
}
_JSON = (b"application/json", b"application/json; charset=utf-8", b"application/json;charset=utf-8")
_ACCEPT_JSON = (None, b"*/*", b"application/json")
GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"


def wants_graphql_response(accept: str | None) -> bool:
    """Whether the Accept header prefers application/graphql-response+json to application/json
    (GraphQL over HTTP: the newer type wins a tie; `*/*` alone keeps application/json)."""
    if not accept or GRAPHQL_RESPONSE_JSON not in accept:
        return False
    preference = {GRAPHQL_RESPONSE_JSON: 0.0, "application/json": 0.0}
    for item in accept.split(","):
        media_type, *parameters = (part.strip() for part in item.split(";"))
        media_type = media_type.lower()
        if media_type not in preference:
            continue
        q = 1.0
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        preference[media_type] = max(preference[media_type], q)
    return preference[GRAPHQL_RESPONSE_JSON] > 0 and preference[GRAPHQL_RESPONSE_JSON] >= preference["application/json"]


def _request_error(result) -> bool:
    """A GraphQL request error: the document did not parse or validate, or its variables did not
    coerce, so nothing was executed (field errors carry a path; refusals such as UNAUTHENTICATED a code)."""
    if isinstance(result, PreExecutionError):
        return not any(error.original_error is not None and not isinstance(error.original_error, GraphQLError) for error in result.errors or ())
    return (
        result.data is None
        and bool(result.errors)
        and all(error.path is None and not (error.extensions or {}).get("code") for error in result.errors)
    )


def client_error(status: int, message: str) -> JSONResponse:
    """A request refused before GraphQL ran, as JSON with a stable code (strawberry's are plain text)."""
    code = "NOT_FOUND" if status == 404 else "INVALID"
    return JSONResponse({"errors": [{"message": message, "extensions": {"code": code}}]}, status_code=status)


def _fast_path_possible() -> bool:
    """Only while every extension of the schema is one the fast path accounts for."""
    for factory in schema.extensions:
        extension = factory() if callable(factory) and not isinstance(factory, type) else factory
        kind = extension if isinstance(extension, type) else type(extension)
        if kind not in _FAST_PATH_EXTENSIONS:
            log.info("GraphQL fast path off: the schema has the extension %s", kind.__name__)
            return False
    return True


class QueryExecutor(PlainLeaves, CompiledListVariables, Executor):
    """graphql-core's executor without the bookkeeping of incremental delivery, which a schema
    without @defer and @stream never uses, with strawberry's resolve info (what its own executor
    adds) and plain leaf fields read at once (graph.execution). `subfields` is the memo of a known
    query without directives, whose subfields depend on its nodes alone: they are collected once
    for all its requests (the memo keeps the nodes alive)."""

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
"""The body the fast path decoded before handing the request on, and what it decoded to: strawberry's
view would decode it again (a mutation always goes on; a batch of 1,000 events is 3 ms of JSON)."""


class GraphQLApp(GraphQL):
    """Strawberry's ASGI view with our context: the caller is known before anything executes."""

    # Subscription messages shared by many subscribers: executed and encoded once, sent by each operation.
    graphql_transport_ws_handler_class = fanout.TransportWSHandler
    graphql_ws_handler_class = fanout.LegacyWSHandler

    def __init__(self, rt: Runtime, limiter: RateLimiter | None = None) -> None:
        super().__init__(
            schema, allowed_origins=rt.settings.allowed_origins, keep_alive=True, keep_alive_interval=15,
            max_subscriptions_per_connection=subscriptions.MAX_SUBSCRIPTIONS_PER_CONNECTION,
        )
        self.rt = rt
        self.fast_path = _fast_path_possible()
        self.max_body_bytes = rt.settings.max_body_bytes
        self.rate_limiter = limiter
        "The budgets Admission spends for each request, and each WebSocket operation spends too."

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        started = False

        async def tracked_send(message):
            nonlocal started
            started = True
            await send(message)

        try:
            receive = limit_body(scope, receive, self.max_body_bytes)
            if self.fast_path and scope["method"] == "POST":
                receive = await self._fast(scope, receive, tracked_send)
                if receive is None:
                    return
            try:
                response = await self.run(Request(scope, receive))
            except HTTPException as refusal:  # strawberry answers these in plain text
                response = client_error(refusal.status_code, refusal.reason)
            await response(scope, receive, tracked_send)
        except LimitExceeded as refusal:
            if started:
                raise
            await refusal.send(send)

    async def run(self, request, context=UNSET, root_value=UNSET):
        response = await super().run(request, context, root_value)
        if (
            not self.is_websocket_request(request)
            and response.media_type == "application/json"
            and wants_graphql_response(request.headers.get("accept"))
        ):
            response.headers["content-type"] = f"{GRAPHQL_RESPONSE_JSON}; charset=utf-8"
            if request.scope.get("shareflow.request_error"):
                response.status_code = 400
        return response

    async def process_result(self, request, result):
        """With application/graphql-response+json a request error answers 400 without `data`."""
        if (
            not self.is_websocket_request(request)
            and _request_error(result)
            and wants_graphql_response(request.headers.get("accept"))
        ):
            request.scope["shareflow.request_error"] = True
            return {key: value for key, value in process_result(result).items() if key != "data"}
        return process_result(result)

    async def _fast(self, scope, receive, send):
        """A successful query whose text is known valid, POSTed as plain JSON, goes straight to
        graphql-core: the HTTP view's negotiation and the extensions' per-request hooks are what
        small queries cost. Anything else (a new text, a mutation, variables of the wrong shape,
        any error, other content types) goes the whole way through strawberry, which answers it
        exactly as before. Returns None when it answered, else the `receive` to hand on."""
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
        _DECODED.set((body, data))  # this request's task only: each request runs in its own
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
        sub_response = await self.get_sub_response(request)
        context = await self.get_context(request, sub_response)
        if context.principal is None:
            return replay  # the authentication gate answers
        result = execute(
            schema._schema,
            document,
            root_value=await self.get_root_value(request),
            context_value=context,
            variable_values=variables,
            operation_name=operation_name,
            is_awaitable=optimized_is_awaitable,
            executor_class=QueryExecutor,
            subfields=subfields,
        )
        if optimized_is_awaitable(result):
            result = await result
        if result.errors or type(result.data) is not dict:
            return replay  # a query reads only: strawberry runs it again and shapes the errors
        payload = self.encode_json({"data": result.data}).encode()
        if sub_response.status_code is None and not sub_response.headers.raw and sub_response.background is None:
            # What create_response would build, without building it: most answers set nothing else.
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-length", str(len(payload)).encode()), (b"content-type", b"application/json"),
            ]})
            await send({"type": "http.response.body", "body": payload})
        else:
            response = self.create_response(response_data={"data": result.data}, sub_response=sub_response)
            await response(scope, replay, send)
        # What OperationMetrics records on strawberry's path (the caller is authenticated by now).
        OPERATIONS.labels(operation=self.rt.operation_labels.label(name, True), type="query").observe(time.perf_counter() - started)
        return None

    def decode_json(self, data: str | bytes) -> object:
        decoded = _DECODED.get()
        if decoded is not None and decoded[0] == data:  # the same body: nothing of it was changed on the way
            return decoded[1]
        return super().decode_json(data)

    def parse_json(self, data: str | bytes) -> object:
        """An HTTP body: a JSON object (or a list, which strawberry refuses as a batch)."""
        try:
            value = super().parse_json(data)
        except RecursionError:
            raise HTTPException(400, "the request body nests too deeply") from None
        if not isinstance(value, (dict, list)):
            raise HTTPException(400, "the request body must be a JSON object")
        return value

    async def on_ws_connect(self, context):
        # WebSocket: the key comes in connection_init ({"authorization": "Bearer ..."}), checked here,
        # and the socket bound to it (graph/sockets.py).
        return await sockets.on_connect(context)

    async def get_context(self, request, response) -> Context:
        if request.scope["type"] == "websocket":
            return sockets.socket_context(self.rt, request, response)
        rt = self.rt
        caller = admitted_caller(request.scope)
        if caller is None:
            return Context(rt=rt, principal=None, request=request, response=response)
        return Context(rt=rt, principal=caller.principal, request=request, response=response, caller=caller)

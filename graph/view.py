"""The GraphQL HTTP and WebSocket view: strawberry's ASGI view with the caller Admission identified,
JSON for every refusal, application/graphql-response+json when asked for, and, with the engine
overrides on (graph/engine/), their fast path for known valid queries and their WebSocket handlers.

A request takes one of two routes: a known valid query with a working key (overrides on) the fast
path, which answers it whatever it answers; anything else strawberry's view."""

import logging

import strawberry
from cross_web import HTTPException
from graphql import GraphQLError
from starlette.requests import Request
from starlette.responses import JSONResponse
from strawberry.asgi import GraphQL
from strawberry.http import process_result
from strawberry.types.execution import PreExecutionError
from strawberry.types.unset import UNSET

from app.limits import LimitExceeded, RateLimiter, admitted_caller, limit_body
from app.runtime import Runtime
from graph import sockets, subscriptions
from graph.context import Context
from graph.engine import known_queries, socket_outlet
from graph.schema import schema_for

log = logging.getLogger("shareflow.graphql")

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


class GraphQLApp(GraphQL):
    """Strawberry's ASGI view with our context: the caller is known before anything executes.
    `schema` defaults to the one the runtime's engine switch asks for (graph/schema.py)."""

    # Both protocols bound to the socket's key (graph/sockets.py); with the overrides on, the
    # engine's subclasses send shared subscription messages straight to the socket.
    graphql_transport_ws_handler_class = sockets.KeyBoundTransportWS
    graphql_ws_handler_class = sockets.KeyBoundLegacyWS

    def __init__(self, rt: Runtime, limiter: RateLimiter | None = None, schema: strawberry.Schema | None = None) -> None:
        overrides = rt.settings.engine_overrides
        super().__init__(
            schema or schema_for(overrides), allowed_origins=rt.settings.allowed_origins, keep_alive=True,
            keep_alive_interval=15, max_subscriptions_per_connection=subscriptions.MAX_SUBSCRIPTIONS_PER_CONNECTION,
        )
        self.rt = rt
        self.fast_path = False
        "Whether known valid queries take the engine's fast path (graph/engine/known_queries.py)."
        if overrides:
            self.graphql_transport_ws_handler_class = socket_outlet.TransportWSHandler
            self.graphql_ws_handler_class = socket_outlet.LegacyWSHandler
            unknown = known_queries.unknown_extension(self.schema)
            if unknown is None:
                self.fast_path = True
            else:
                log.warning("GraphQL fast path off: the schema has the extension %s, which the fast path does not run", unknown)
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
                receive = await known_queries.answer(self, scope, receive, tracked_send)
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

    def decode_json(self, data: str | bytes) -> object:
        if self.fast_path:
            body = known_queries.decoded(data)  # the fast path decoded it before handing it on
            if body is not None:
                return body[0]
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

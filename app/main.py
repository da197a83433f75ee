"""The ASGI app: GraphQL (HTTP and WebSocket) at /graphql, health and readiness probes."""

import contextlib
import gc
import json
import logging

from graphql import OperationType, execute, get_operation_ast

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from strawberry.asgi import GraphQL
from strawberry.execution.is_awaitable import optimized_is_awaitable
from strawberry.extensions import AddValidationRules, MaxTokensLimiter, ParserCache, ValidationCache

from app.auth import identify
from app.db import ping
from app.runtime import Runtime
from app.settings import Settings, get_settings
from app.statement_csv import statement_csv
from graph.context import Context
from graph.extensions import PREPARED, AuthenticationGate, ErrorShaping
from graph.schema import schema

log = logging.getLogger("shareflow.graphql")

# The extensions the fast path knows to be document-level (they only parse and validate, and a
# prepared document has passed them) or to have nothing to do on a successful, authenticated query.
_FAST_PATH_EXTENSIONS = {
    AuthenticationGate, ErrorShaping, AddValidationRules, MaxTokensLimiter, ParserCache, ValidationCache,
}
_JSON = (b"application/json", b"application/json; charset=utf-8", b"application/json;charset=utf-8")
_ACCEPT_JSON = (None, b"*/*", b"application/json")


def _fast_path_possible() -> bool:
    """Only while every extension of the schema is one the fast path accounts for."""
    for factory in schema.extensions:
        extension = factory() if callable(factory) and not isinstance(factory, type) else factory
        kind = extension if isinstance(extension, type) else type(extension)
        if kind not in _FAST_PATH_EXTENSIONS:
            log.info("GraphQL fast path off: the schema has the extension %s", kind.__name__)
            return False
    return True


class GraphQLApp(GraphQL):
    """Strawberry's ASGI view with our context: the caller is known before anything executes."""

    def __init__(self, rt: Runtime) -> None:
        super().__init__(schema, allowed_origins=rt.settings.allowed_origins, keep_alive=True, keep_alive_interval=15)
        self.rt = rt
        self.fast_path = _fast_path_possible()
        self._executor_class = schema.execution_context_class

    async def __call__(self, scope, receive, send) -> None:
        if self.fast_path and scope["type"] == "http" and scope["method"] == "POST":
            receive = await self._fast(scope, receive, send)
            if receive is None:
                return
        await super().__call__(scope, receive, send)

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
        except ValueError:
            return replay
        if type(data) is not dict:
            return replay
        query = data.get("query")
        document = PREPARED.get(query) if type(query) is str else None
        variables = data.get("variables")
        operation_name = data.get("operationName")
        if (
            document is None
            or data.get("extensions")
            or not (variables is None or type(variables) is dict)
            or not (operation_name is None or type(operation_name) is str)
            or len(data) > 4
        ):
            return replay
        operation = get_operation_ast(document, operation_name)
        if operation is None or operation.operation is not OperationType.QUERY:
            return replay
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
            executor_class=self._executor_class,
            operation_extensions=None,
        )
        if optimized_is_awaitable(result):
            result = await result
        if result.errors or type(result.data) is not dict:
            return replay  # a query reads only: strawberry runs it again and shapes the errors
        response = self.create_response(response_data={"data": result.data}, sub_response=sub_response)
        await response(scope, replay, send)
        return None

    async def get_context(self, request, response) -> Context:
        # A cached key costs no session at all; only a miss asks the database.
        rt = self.rt
        caller = await identify(rt.sessions, request.headers.get("authorization"), rt.settings.operator_key, rt.keys)
        if caller is None:
            return Context(rt=rt, principal=None, request=request, response=response)
        return Context(rt=rt, principal=caller.principal, request=request, response=response, caller=caller)


def create_app(settings: Settings | None = None, rt: Runtime | None = None) -> Starlette:
    rt = rt or Runtime.from_settings(settings or get_settings())
    graphql = GraphQLApp(rt)

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def readyz(_: Request) -> JSONResponse:
        try:
            await ping(rt.engine)
        except Exception as error:  # noqa: BLE001 - any failure to reach the database means not ready
            return JSONResponse({"status": "unavailable", "reason": type(error).__name__}, status_code=503)
        return JSONResponse({"status": "ready"})

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        # What is loaded by now (schema, mappers, compiled statements) lives as long as the process:
        # keep it out of the collector's full passes, which otherwise walk it again and again.
        gc.collect()
        gc.freeze()
        yield
        await rt.close()

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/statements/{statement_id}.csv", statement_csv),
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
        ],
        lifespan=lifespan,
    )
    app.state.rt = rt
    return app

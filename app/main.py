"""The ASGI app: GraphQL (HTTP and WebSocket) at /graphql, health and readiness probes."""

import contextlib

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from strawberry.asgi import GraphQL

from app.auth import authenticate
from app.db import ping
from app.runtime import Runtime
from app.settings import Settings, get_settings
from graph.context import Context
from graph.schema import schema


class GraphQLApp(GraphQL):
    """Strawberry's ASGI view with our context: the caller is known before anything executes."""

    def __init__(self, rt: Runtime) -> None:
        super().__init__(schema, allowed_origins=rt.settings.allowed_origins, keep_alive=True, keep_alive_interval=15)
        self.rt = rt

    async def get_context(self, request, response) -> Context:
        authorization = request.headers.get("authorization")
        async with self.rt.sessions() as session:
            principal = await authenticate(session, authorization, self.rt.settings.operator_key, self.rt.keys)
        return Context(rt=self.rt, principal=principal, request=request, response=response)


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
        yield
        await rt.close()

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/graphql", graphql, methods=["GET", "POST"]),
            WebSocketRoute("/graphql", graphql),
        ],
        lifespan=lifespan,
    )
    app.state.rt = rt
    return app

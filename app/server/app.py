"""The ASGI app: its routes (GraphQL over HTTP and WebSocket, the NDJSON usage door, statement
downloads, the dashboard, metrics, health and readiness probes), its middleware and its lifespan.
The composition root: the one place where the domain (app/) meets its GraphQL face (graph/)."""

import contextlib
import gc

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from app.db import ping
from app.limits import Admission, rate_limiter
from app.observability import RequestIds, configure_logging, metrics_endpoint
from app.runtime import Runtime
from app.server import dashboard
from app.server.statement_csv import statement_csv
from app.server.usage_ndjson import usage_ndjson
from app.settings import Settings, get_settings
from graph.view import GraphQLApp, client_error


def create_app(settings: Settings | None = None, rt: Runtime | None = None) -> Starlette:
    rt = rt or Runtime.from_settings(settings or get_settings())
    limiter = rate_limiter(rt.settings.rate_limit_per_minute, rt.settings.redis_url)
    graphql = GraphQLApp(rt, limiter)

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
        # And make full passes rarer (after 1,000 second-generation ones; Python's default is 10):
        # a thousand open subscriptions hold some 400,000 objects, and a full pass over them stops
        # the process for about a third of a second, holding up every message of a fan-out. The
        # young generations, where nearly all garbage dies, are collected as before.
        young, middle, _ = gc.get_threshold()
        gc.set_threshold(young, middle, 1_000)
        if rt.settings.json_logs:
            configure_logging(rt.settings.log_level)
        yield
        if graphql.rate_limiter is not None:
            await graphql.rate_limiter.close()
        await rt.close()

    app = Starlette(
        routes=[
            Route("/graphql", graphql, methods=["GET", "POST"]),  # first: nearly every request is for it
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics_endpoint),
            Route("/statements/{statement_id}.csv", statement_csv),
            Route("/usage.ndjson", usage_ndjson, methods=["POST"]),
            *dashboard.routes,
            WebSocketRoute("/graphql", graphql),
        ],
        middleware=[
            Middleware(RequestIds),
            # The client address a request counts against, where the peer is a proxy we trust.
            *([Middleware(ProxyHeadersMiddleware, trusted_hosts=rt.settings.trusted_proxies)] if rt.settings.trusted_proxies else []),
            Middleware(Admission, rt=rt, limiter=limiter),
        ],
        lifespan=lifespan,
        # The router's own refusals (an unknown path, a method a route does not take) as JSON too.
        exception_handlers={HTTPException: lambda _request, refusal: client_error(refusal.status_code, refusal.detail)},
    )
    app.state.rt = rt
    app.state.graphql = graphql
    return app

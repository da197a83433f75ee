"""Metrics for Prometheus (/metrics) and structured JSON logs that carry the request id."""

import contextvars
import json
import logging
import secrets

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pythonjsonlogger.json import JsonFormatter
from starlette.requests import Request
from starlette.responses import Response

REGISTRY = CollectorRegistry()
OPERATIONS = Histogram(
    "shareflow_graphql_operation_seconds",
    "GraphQL operations by operation name and type, with their latency.",
    ["operation", "type"],
    registry=REGISTRY,
)
USAGE_EVENTS = Counter(
    "shareflow_usage_events_total", "Usage events recorded, by outcome.", ["status"], registry=REGISTRY
)
SUBSCRIPTIONS = Gauge("shareflow_open_subscriptions", "GraphQL subscriptions open in this process.", registry=REGISTRY)
PERIOD_CLOSES = Counter("shareflow_period_closes_total", "Settlement periods closed.", registry=REGISTRY)

log = logging.getLogger("shareflow.http")


class OperationLabels:
    """The operation names /metrics keeps a series for: only authenticated callers' names, and only
    the first `limit` of them (later ones count as `other`, requests without a key as `anonymous`),
    so that no traffic can grow the metric set without bound. One per Runtime."""

    def __init__(self, limit: int = 200) -> None:
        self.limit = limit
        self._names: set[str] = set()

    def label(self, name: str, authenticated: bool) -> str:
        if not authenticated:
            return "anonymous"
        if name in self._names:
            return name
        if len(self._names) < self.limit:
            self._names.add(name)
            return name
        return "other"

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


class RequestIds:
    """ASGI middleware: every request (and WebSocket connection) gets an id, in the logs through a
    context variable and to the client as `x-request-id`. A fault nothing inside answered (the
    database down while a key is verified, say) is logged with its traceback and answered as JSON,
    masked as INTERNAL with that id, never as a bare 500."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        value = secrets.token_hex(16)
        request_id.set(value)

        started = False

        async def send_with_id(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", value.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unexpected error, request %s", value)
            if started or scope["type"] != "http":
                raise
            body = json.dumps({"errors": [{"message": "Unexpected error.", "extensions": {"code": "INTERNAL", "requestId": value}}]})
            await send_with_id({"type": "http.response.start", "status": 500, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            ]})
            await send_with_id({"type": "http.response.body", "body": body.encode()})


class _RequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


def configure_logging(level: str = "INFO", stream=None) -> None:
    """Every log line as one JSON object with the request id of the request it belongs to."""
    handler = logging.StreamHandler(stream)
    # `timestamp`: ISO 8601 in UTC, with its offset.
    handler.setFormatter(JsonFormatter("%(levelname)s %(name)s %(message)s %(request_id)s", timestamp=True))
    handler.addFilter(_RequestId())
    # A line says nothing of threads, processes or source lines, so a record need not look them up
    # (the logging HOWTO's "Optimization"): the access log writes one for every request.
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True


async def metrics_endpoint(_request: Request) -> Response:
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

"""The floor of the HTTP figure: a plain Starlette JSON endpoint that returns fixed bytes.

It runs under exactly the uvicorn settings of `shareflow serve` (app/server/cli.py): factory app, one
worker, log level info with the access log on, uvloop and httptools when installed.
    SHAREFLOW_BENCH_BODY_FILE=body.json python -m bench.plain_app --port 8001
"""

import argparse
import contextlib
import gc
import os
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


def create_app() -> Starlette:
    body = Path(os.environ["SHAREFLOW_BENCH_BODY_FILE"]).read_bytes()

    async def graphql(request: Request) -> Response:
        await request.body()  # read the request as the real endpoint must
        return Response(body, media_type="application/json")

    async def healthz(_: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        gc.collect()
        gc.freeze()  # as app/server/app.py does at start-up, so that neither side pays for the other's choice
        yield

    return Starlette(routes=[Route("/graphql", graphql, methods=["POST"]), Route("/healthz", healthz)], lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    import uvicorn

    uvicorn.run("bench.plain_app:create_app", factory=True, host=args.host, port=args.port, workers=1, log_level="info",
                ws_per_message_deflate=False)


if __name__ == "__main__":
    main()

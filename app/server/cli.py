"""The `shareflow` command: serve, migrate, demo, create-network, import-usage, close-period."""

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

from app.ingest.importer import FIELDS
from app.settings import get_settings

DEMO_KEYS = Path("shareflow-demo-keys.json")


def _runtime():
    from app.runtime import Runtime

    return Runtime.from_settings(get_settings())


async def _migrate() -> None:
    from app.migrate import upgrade

    rt = _runtime()
    try:
        await upgrade(rt.engine)
    finally:
        await rt.close()


async def _demo() -> dict[str, str]:
    from sqlalchemy import select

    from app.server.demo import seed
    from models import Network

    rt = _runtime()
    try:
        async with rt.sessions() as session:
            exists = await session.scalar(select(Network.id).limit(1))
        if exists is not None and DEMO_KEYS.exists():
            return json.loads(DEMO_KEYS.read_text())
        if exists is not None:
            raise SystemExit("the database already holds a network; the demo seeds only an empty one")
        keys = await seed(rt)
    finally:
        await rt.close()
    DEMO_KEYS.write_text(json.dumps(keys, indent=2))
    os.chmod(DEMO_KEYS, 0o600)
    return keys


async def _create_network(name: str, currency: str, owner_name: str, time_zone: str | None, first_period: str | None):
    from app.auth import OPERATOR
    from app.errors import DomainError
    from app.services.networks import create_network
    from graph.ids import to_global_id

    rt = _runtime()
    try:
        created = await create_network(
            rt, OPERATOR, name=name, currency=currency, owner_name=owner_name, time_zone=time_zone, first_period=first_period
        )
    except DomainError as error:
        problems = [{"field": list(p.path), "code": p.code, "message": p.message} for p in error.problems]
        print(json.dumps({"errors": problems}), file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        await rt.close()
    return {"networkId": to_global_id("Network", created.network.id), "ownerApiKey": created.owner_key}


async def _principal(rt, api_key: str):
    """The party behind a key, as the API would see it; exits when the key does not work."""
    from app.auth import authenticate

    async with rt.sessions() as session:
        principal = await authenticate(session, f"Bearer {api_key}", None, rt.keys)
    if principal is None:
        raise SystemExit("the API key is missing, unknown or revoked")
    return principal


async def _close_period(period: str, api_key: str) -> dict:
    from app.errors import AccessDenied, DomainError
    from app.services.closing import close_period

    rt = _runtime()
    try:
        principal = await _principal(rt, api_key)
        try:
            key, count = await close_period(rt, principal, period)
        except (DomainError, AccessDenied) as error:
            print(json.dumps({"errors": [{"code": getattr(error, "code", "FORBIDDEN"), "message": str(error)}]}), file=sys.stderr)
            raise SystemExit(2) from None
    finally:
        await rt.close()
    return {"period": key, "statementCount": count}


async def _import_usage(path: str, api_key: str, progress: bool) -> dict:
    from dataclasses import asdict

    from app.ingest.importer import Reader, import_usage
    from graph.ids import service_row_id

    # The reader first: it reads the file while the database layer is imported and the key checked.
    reader = Reader(Path(path), service_row_id)
    try:
        rt = _runtime()
        try:
            principal = await _principal(rt, api_key)
            try:
                report = await import_usage(rt, principal, Path(path), service_row_id, progress, reader)
            except (OSError, UnicodeDecodeError) as error:
                raise SystemExit(
                    f"cannot read {path}: {error}; the rows before it that were recorded stay recorded, "
                    "and a re-run of the mended file doubles none of them"
                ) from None
        finally:
            await rt.close()
    finally:
        reader.close()
    return asdict(report)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="shareflow", description="Shareflow, the revenue-sharing gateway")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the GraphQL API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    commands.add_parser("migrate", help="bring the database schema up to date")
    commands.add_parser("demo", help="seed the shared-mobility demo network (once) and print its keys")
    create = commands.add_parser("create-network", help="create a network and print its owner's key as JSON")
    create.add_argument("--name", required=True)
    create.add_argument("--currency", required=True)
    create.add_argument("--owner-name", required=True)
    create.add_argument("--time-zone")
    create.add_argument("--first-period")
    load = commands.add_parser("import-usage", help="record usage from a CSV or NDJSON file (re-runs double nothing)")
    load.add_argument("file", help="CSV with a header, or .ndjson; fields: " + ", ".join(FIELDS))
    load.add_argument("--api-key", default=os.environ.get("SHAREFLOW_API_KEY"), help="the recording party's key (or SHAREFLOW_API_KEY)")
    load.add_argument("--no-progress", action="store_true")
    closing = commands.add_parser("close-period", help="close the oldest open period into final statements (the owner's key)")
    closing.add_argument("period", help='e.g. "2026-10"')
    closing.add_argument("--api-key", default=os.environ.get("SHAREFLOW_API_KEY"), help="the owner's key (or SHAREFLOW_API_KEY)")
    args = parser.parse_args(argv)

    if args.command == "serve":
        import uvicorn

        uvicorn.run(
            "app.server.app:create_app", factory=True, host=args.host, port=args.port, workers=args.workers, log_level="info",
            ws_per_message_deflate=get_settings().ws_compression,
            ws_max_size=get_settings().max_body_bytes,  # a larger message is refused before it is buffered
            proxy_headers=False,  # the app trusts SHAREFLOW_TRUSTED_PROXIES only (uvicorn would trust 127.0.0.1)
        )
    elif args.command == "migrate":
        asyncio.run(_migrate())
        print("database is up to date")
    elif args.command == "demo":
        keys = asyncio.run(_demo())
        print("Demo network 'Shared Mobility Demo'; API keys (Authorization: Bearer <key>):")
        for name, key in keys.items():
            print(f"  {name:<16} {key}")
    elif args.command == "create-network":
        result = asyncio.run(
            _create_network(args.name, args.currency, args.owner_name, args.time_zone, args.first_period)
        )
        print(json.dumps(result))
    elif args.command == "close-period":
        if not args.api_key:
            raise SystemExit("--api-key (or SHAREFLOW_API_KEY) is required")
        print(json.dumps(asyncio.run(_close_period(args.period, args.api_key))))
    elif args.command == "import-usage":
        if not args.api_key:
            raise SystemExit("--api-key (or SHAREFLOW_API_KEY) is required")
        report = asyncio.run(_import_usage(args.file, args.api_key, not args.no_progress))
        print(json.dumps(report))
        if report["rejected"]:
            raise SystemExit(1)


if __name__ == "__main__":
    main()

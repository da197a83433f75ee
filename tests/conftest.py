"""Fixtures shared by the service and API tests: one migrated database per backend and session,
a fresh network per test (every row is network-scoped, so tests cannot see each other)."""

import dataclasses
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from app.server.app import create_app
from app.migrate import upgrade
from app.runtime import Runtime
from app.settings import Settings

OPERATOR_KEY = "sf_operator_test_key_0123456789"
POSTGRES_URL = os.environ.get("SHAREFLOW_TEST_POSTGRES_URL")
BACKENDS = ["sqlite", "postgres"] if POSTGRES_URL else ["sqlite"]


def pytest_report_header(config):
    if POSTGRES_URL:
        return f"database tests: SQLite and PostgreSQL ({POSTGRES_URL})"
    return "database tests: SQLite only; set SHAREFLOW_TEST_POSTGRES_URL to run them on PostgreSQL too"


async def _postgres_database() -> tuple[str, str]:
    """A throw-away database on the shared server: (its URL, its name)."""
    name = f"shareflow_test_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    async with admin.connect() as connection:
        await connection.execute(text(f'CREATE DATABASE "{name}"'))
    await admin.dispose()
    return POSTGRES_URL.rsplit("/", 1)[0] + "/" + name, name


async def _drop_postgres_database(name: str) -> None:
    admin = create_async_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    async with admin.connect() as connection:
        await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await admin.dispose()


@pytest.fixture(scope="session", params=BACKENDS)
async def runtime(request, tmp_path_factory):
    """A migrated database and its runtime, once per backend."""
    if request.param == "postgres":
        url, name = await _postgres_database()
    else:
        url, name = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'shareflow.db'}", None
    rt = Runtime.from_settings(Settings(database_url=url, operator_key=OPERATOR_KEY, auth_cache_seconds=0))
    await upgrade(rt.engine)
    yield rt
    await rt.close()
    if name:
        await _drop_postgres_database(name)


@pytest.fixture
def rt(runtime):
    """The runtime with the real clock restored after each test."""
    yield runtime
    runtime.clock = lambda: datetime.now(UTC)


@pytest.fixture
async def client(rt):
    app = create_app(rt=rt)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://shareflow.test") as client:
        yield client


@pytest.fixture
def engine_runtime(rt):
    """The tests' runtime (the same database, caches and pub/sub) with the GraphQL engine's
    overrides on or off (graph/engine/), whatever SHAREFLOW_ENGINE_OVERRIDES says."""

    def runtime(overrides: bool) -> Runtime:
        return dataclasses.replace(rt, settings=rt.settings.model_copy(update={"engine_overrides": overrides}))

    return runtime


@pytest.fixture
def engine_client(engine_runtime):
    """An HTTP client of the app with the engine's overrides on or off: `async with engine_client(True) as client`."""

    def client(overrides: bool) -> httpx.AsyncClient:
        app = create_app(rt=engine_runtime(overrides))
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://shareflow.test")

    return client


@dataclass
class Api:
    """Posts GraphQL operations as a given key, the way a client does."""

    client: httpx.AsyncClient

    async def post(self, query: str, variables: dict | None = None, key: str | None = None) -> dict:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        response = await self.client.post("/graphql", json={"query": query, "variables": variables or {}}, headers=headers)
        assert response.status_code == 200, response.text
        return response.json()

    async def data(self, query: str, variables: dict | None = None, key: str | None = None) -> dict:
        """The data of an operation that must succeed without top-level errors."""
        body = await self.post(query, variables, key)
        assert not body.get("errors"), body["errors"]
        return body["data"]

    async def error_code(self, query: str, variables: dict | None = None, key: str | None = None) -> str:
        body = await self.post(query, variables, key)
        assert body.get("errors"), body
        return body["errors"][0]["extensions"]["code"]


@pytest.fixture
def api(client) -> Api:
    return Api(client)

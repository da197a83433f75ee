"""Alembic environment: migrates the database of SHAREFLOW_DATABASE_URL, or a connection handed in."""

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

import models  # noqa: F401  (registers every table on the metadata)
from app.db import create_engine
from app.settings import get_settings
from sqlmodel import SQLModel

target_metadata = SQLModel.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_online(url: str) -> None:
    engine = create_engine(url)
    async with engine.connect() as connection:
        await connection.run_sync(_run)
        await connection.commit()
    await engine.dispose()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    asyncio.run(_run_online(context.config.attributes.get("url") or get_settings().database_url))

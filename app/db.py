"""The database: one async engine per process, SQLite (WAL) by default (app.sqlite), PostgreSQL for scale-out."""

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from app.sqlite import create_sqlite_engine


def create_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        return create_sqlite_engine(url)
    return create_async_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def lock_network_books(session: AsyncSession, network_id: int) -> None:
    """Serialise the writers of a network's books (closing, corrections) until the transaction
    ends: a correction must not book into a period that a concurrent close is freezing. SQLite
    writers hold the database's write lock already."""
    if session.bind.dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": network_id})


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))

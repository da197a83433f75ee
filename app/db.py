"""The database: one async engine per process, SQLite (WAL) by default, PostgreSQL for scale-out."""

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import Engine, event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine


WRITE_LOCK = "shareflow_write_lock"
"Execution option: this transaction will write (SQLite takes its write lock at BEGIN)."


def create_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:
            # Writes serialise in SQLite: WAL lets readers go on while one writer commits.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            # FULL: an acknowledged event survives a power loss too, not only a killed process
            # (WAL with NORMAL may lose the last commits); one fsync per batch is cheap enough.
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            # A million events in a period: a batch's events land on pages all over the index by
            # consumer. SQLite's default page cache (about 2 MB) would read them again for every
            # batch, and its checkpoint every 1,000 WAL pages would copy them back to the database
            # after every batch or two; 64 MB of cache and a checkpoint every 10,000 pages (a WAL of
            # up to about 40 MB) let a page take many batches' events before it is copied.
            cursor.execute("PRAGMA cache_size=-65536")
            cursor.execute("PRAGMA wal_autocheckpoint=10000")
            cursor.close()
            # Let SQLAlchemy's "begin" below decide how a transaction starts.
            dbapi_connection.isolation_level = None

        @event.listens_for(engine.sync_engine, "begin")
        def _sqlite_begin(connection) -> None:
            # A writer takes the write lock up front: a deferred transaction that read first could
            # find its snapshot stale at its first write and fail instead of waiting its turn.
            immediate = connection.get_execution_options().get(WRITE_LOCK, False)
            connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    return create_async_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def begin_write(session: AsyncSession) -> None:
    """Start the session's transaction as a writer (a no-op beyond SQLite)."""
    await session.connection(execution_options={WRITE_LOCK: True})


_WRITERS: "weakref.WeakKeyDictionary[Engine, asyncio.Lock]" = weakref.WeakKeyDictionary()


@asynccontextmanager
async def write_turn(session: AsyncSession) -> AsyncIterator[None]:
    """Begin the session's transaction as a writer (begin_write), for the length of the block.

    On SQLite this process's writers also queue here, in arrival order: a writer that finds the
    database locked otherwise sleeps in SQLite's busy handler and retries, often well after the
    lock is free (four concurrent recordUsage batches left the server idle a tenth of the time).
    Only a queue: SQLite's own lock still decides, and across processes the busy timeout does."""
    engine = session.bind.sync_engine
    if engine.dialect.name != "sqlite":
        await begin_write(session)
        yield
        return
    turn = _WRITERS.get(engine)
    if turn is None:
        turn = _WRITERS[engine] = asyncio.Lock()
    async with turn:
        await begin_write(session)
        yield


async def lock_network_books(session: AsyncSession, network_id: int) -> None:
    """Serialise the writers of a network's books (closing, corrections) until the transaction
    ends: a correction must not book into a period that a concurrent close is freezing. SQLite
    writers hold the database's write lock already."""
    if session.bind.dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": network_id})


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))

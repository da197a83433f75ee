"""The database: one async engine per process, SQLite (WAL) by default, PostgreSQL for scale-out."""

import asyncio
import logging
import os
import sqlite3
import threading
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import Engine, event, make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine


log = logging.getLogger("shareflow.db")

WRITE_LOCK = "shareflow_write_lock"
"Execution option: this transaction will write (SQLite takes its write lock at BEGIN)."


def create_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})
        database = make_url(url).database
        plain_file = database and database != ":memory:" and not database.startswith("file:")
        checkpoints = Checkpoints(os.path.abspath(database)) if plain_file else None

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
            # batch: 64 MB of cache. And no checkpoint in a commit: with such a period the commit
            # that crossed SQLite's threshold copied thousands of pages back into the database
            # while every writer waited (a tenth of the throughput); Checkpoints does it beside them
            # (SQLite's own, every 1,000 pages, where there is no plain file to watch).
            cursor.execute("PRAGMA cache_size=-65536")
            cursor.execute(f"PRAGMA wal_autocheckpoint={0 if checkpoints is not None else 1000}")
            cursor.close()
            # Let SQLAlchemy's "begin" below decide how a transaction starts.
            dbapi_connection.isolation_level = None

        @event.listens_for(engine.sync_engine, "begin")
        def _sqlite_begin(connection) -> None:
            # A writer takes the write lock up front: a deferred transaction that read first could
            # find its snapshot stale at its first write and fail instead of waiting its turn.
            immediate = connection.get_execution_options().get(WRITE_LOCK, False)
            connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        @event.listens_for(engine.sync_engine, "reset")
        def _sqlite_reset(dbapi_connection, _record, state) -> None:
            # A COMMIT that SQLite refused (a deferred constraint, a full disk) leaves its
            # transaction open, and SQLAlchemy, whose commit was called, then skips the rollback
            # on the connection's return to the pool: the connection would keep the write lock
            # and every other writer would wait on it.
            if state.transaction_was_reset and state.asyncio_safe and dbapi_connection.driver_connection.in_transaction:
                dbapi_connection.rollback()

        if checkpoints is not None:
            # Running while the engine has connections: from its first (again after a dispose).
            event.listen(engine.sync_engine, "connect", lambda _connection, _record: checkpoints.start())
            event.listen(engine.sync_engine, "engine_disposed", lambda _engine: checkpoints.stop())
        return engine
    return create_async_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


class Checkpoints:
    """A thread that copies the WAL back into a SQLite database beside the writers.

    Each INTERVAL a PASSIVE checkpoint, which waits for nobody: it copies what was committed and
    the writers go on meanwhile (the copying is mostly the kernel's writes and syncs, off the
    writers' thread). A WAL is started afresh by the first write after a checkpoint that copied it
    all; should writes never leave it that chance and the WAL pass MAX_WAL_FRAMES, a RESTART
    checkpoint waits for the writer of the moment and starts it afresh."""

    INTERVAL = 1.0
    MAX_WAL_FRAMES = 100_000
    "About 400 MB of 4 KB pages."

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._stopping = threading.Event()
                self._thread = threading.Thread(target=self._run, args=(self._stopping,), name="shareflow-sqlite-checkpoints", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
            self._stopping.set()
        if thread is not None:
            thread.join()

    def checkpoint(self, connection: sqlite3.Connection) -> tuple[int, int, int]:
        """One PASSIVE checkpoint (RESTART past MAX_WAL_FRAMES): SQLite's (busy, frames in the
        WAL, frames copied)."""
        busy, frames, copied = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if frames > self.MAX_WAL_FRAMES:
            busy, frames, copied = connection.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
        return busy, frames, copied

    def _run(self, stopping: threading.Event) -> None:
        connection = None
        try:
            while not stopping.wait(self.INTERVAL):
                if connection is None:
                    try:  # the file is the app's to create (and to migrate): not before it exists
                        connection = sqlite3.connect(f"{Path(self.path).as_uri()}?mode=rw", uri=True, timeout=30)
                    except sqlite3.OperationalError:
                        continue
                try:
                    self.checkpoint(connection)
                except sqlite3.Error:
                    log.warning("SQLite checkpoint of %s failed; the next one tries again", self.path, exc_info=True)
        finally:
            if connection is not None:
                connection.close()


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

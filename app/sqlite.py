"""SQLite's own machinery: its engine's setup, the thread that checkpoints its WAL, the write
turn its writers queue for, and the group commit that puts batches arriving together into one
transaction. Nothing here knows the domain."""

import asyncio
import logging
import os
import sqlite3
import threading
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Generic, TypeVar

from sqlalchemy import Engine, event, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

log = logging.getLogger("shareflow.db")

WRITE_LOCK = "shareflow_write_lock"
"Execution option: this transaction will write (SQLite takes its write lock at BEGIN)."


def create_sqlite_engine(url: str) -> AsyncEngine:
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


T = TypeVar("T")


class TransactionLost(Exception):
    """A batch's failure (`error`) took its transaction with it: its savepoint could not be rolled
    back (SQLite ends the whole transaction on some errors), or ORM changes of the batch are left
    that the commit would write."""

    def __init__(self, error: Exception) -> None:
        super().__init__(f"the batch failed ({error!r}) and its transaction with it")
        self.error = error


class _Batch(Generic[T]):
    __slots__ = ("work", "committed", "answer")

    def __init__(self, work: Callable[[AsyncSession], Awaitable[T]], committed: Callable[[T], Awaitable[None]] | None,
                 answer: asyncio.Future) -> None:
        self.work, self.committed, self.answer = work, committed, answer


class GroupCommit:
    """Batches of writes, committed together: the batches that arrive while one transaction is
    written go into the next, each in its own savepoint, and commit at once.

    SQLite writes one transaction at a time, and its commit writes every page the transaction
    touched to the WAL and syncs it: batches that touch the same pages share them and one sync.
    Each batch keeps its own outcome (a batch that fails, whatever the cause, fails alone:
    _commit), and none is answered before the commit that holds it.

    A batch is `work(session)`, which runs in the group's write transaction and opens and rolls
    back its own savepoint (raising TransactionLost where that failed); `committed(result)` runs
    once its transaction committed, before its caller is answered."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self.sessions = sessions
        self.waiting: list[_Batch] = []
        self.writer: asyncio.Task | None = None

    async def submit(self, work: Callable[[AsyncSession], Awaitable[T]],
                     committed: Callable[[T], Awaitable[None]] | None = None) -> T:
        answer = asyncio.get_running_loop().create_future()
        self.waiting.append(_Batch(work, committed, answer))
        if self.writer is None:
            self.writer = asyncio.create_task(self._write())
        return await answer

    async def _write(self) -> None:
        try:
            while self.waiting:
                # A caller gone before its turn (its answer cancelled) has nothing written.
                group = [batch for batch in self.waiting if not batch.answer.done()]
                self.waiting = []
                if group:
                    await self._commit(group)
        finally:
            self.writer = None

    async def _commit(self, group: list[_Batch]) -> None:
        """Run the batches in one transaction and answer each once it has committed.

        A batch's failure is its own, whatever its cause: a refusal or a fault is rolled back to
        the batch's savepoint and answers that batch alone; the other batches commit. A failure
        that took the transaction with it (TransactionLost) leaves the other batches to be
        written again in a new one, a commit that fails each batch of it again alone (what only
        the commit finds, such as a deferred constraint, is then its own batch's failure):
        nothing of them was written. An error before any batch ran (the database unreachable or
        locked) is the answer of every batch."""
        outcomes: dict[int, object] = {}
        rounds = [list(range(len(group)))]
        "The positions of the batches to run, one transaction each."
        try:
            while rounds:
                todo = rounds.pop(0)
                done: dict[int, object] = {}
                try:
                    async with self.sessions() as session, write_turn(session):
                        for position in todo:
                            try:
                                done[position] = await group[position].work(session)
                            except TransactionLost as lost:
                                outcomes[position] = lost.error
                                raise
                            except Exception as error:
                                outcomes[position] = error
                                if not _clean(session):
                                    raise TransactionLost(error) from None
                        await session.commit()
                except TransactionLost:
                    left = [position for position in todo if position not in outcomes]
                    rounds[:0] = [left] if left else []
                    continue
                except Exception as error:
                    if len(done) > 1:  # the commit failed: each batch it held, again alone
                        rounds[:0] = [[position] for position in done]
                    else:
                        for position in todo:
                            outcomes.setdefault(position, error)
                    continue
                for position, result in done.items():
                    outcomes[position] = result
                    if group[position].committed is not None:
                        await group[position].committed(result)
        except BaseException:
            for batch in group:
                if not batch.answer.done():
                    batch.answer.cancel()
            raise
        for position, batch in enumerate(group):
            if batch.answer.done():
                continue
            outcome = outcomes[position]
            if isinstance(outcome, Exception):
                batch.answer.set_exception(outcome)
            else:
                batch.answer.set_result(outcome)


def _clean(session: AsyncSession) -> bool:
    """Whether the session may still commit the other batches after one was rolled back to its savepoint."""
    transaction = session.get_transaction()
    return transaction is not None and transaction.is_active and not (session.new or session.dirty or session.deleted)


_GROUPS: "weakref.WeakKeyDictionary[Engine, GroupCommit]" = weakref.WeakKeyDictionary()


def group_commit(engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession]) -> GroupCommit:
    """The engine's group commit (one per database: its writers take turns anyway)."""
    group = _GROUPS.get(engine.sync_engine)
    if group is None:
        group = _GROUPS[engine.sync_engine] = GroupCommit(sessions)
    return group

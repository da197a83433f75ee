"""app.sqlite.Checkpoints: SQLite's WAL is copied back into the database by a thread beside the
writers, not by the commit that crosses a threshold, and it is started afresh all the same."""

import asyncio
import os
import threading

import pytest

from app.db import create_engine
from app.sqlite import Checkpoints

ROWS = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40) SELECT hex(randomblob(2000)) FROM n"
"About 160 KB of rows: some forty pages of the WAL."


def checkpoint_threads() -> int:
    return sum(thread.name == "shareflow-sqlite-checkpoints" for thread in threading.enumerate())


async def write(engine, transactions: int) -> None:
    for _ in range(transactions):
        async with engine.begin() as connection:
            await connection.exec_driver_sql(f"INSERT INTO blobs (x) {ROWS}")


async def until(condition, seconds: float = 10) -> None:
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("not within the time")


@pytest.fixture
def quick(monkeypatch):
    monkeypatch.setattr(Checkpoints, "INTERVAL", 0.05)


async def test_the_wal_is_copied_back_beside_the_writers_and_started_afresh(tmp_path, quick):
    path = tmp_path / "checkpoints.db"
    threads = checkpoint_threads()
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    try:
        async with engine.begin() as connection:
            # A commit never checkpoints by itself.
            assert (await connection.exec_driver_sql("PRAGMA wal_autocheckpoint")).scalar() == 0
            await connection.exec_driver_sql("CREATE TABLE blobs (x TEXT)")
        assert checkpoint_threads() == threads + 1
        await write(engine, 10)
        # What was committed reaches the database file while the engine is open (SQLite's own
        # threshold, 1,000 pages, was never crossed).
        await until(lambda: os.path.getsize(path) > 1_500_000)
        wal_size = os.path.getsize(f"{path}-wal")
        await write(engine, 10)
        await until(lambda: os.path.getsize(path) > 3_000_000)
        # The second round's frames went to the start of the WAL again: it did not grow by another round.
        assert os.path.getsize(f"{path}-wal") < 1.2 * wal_size
    finally:
        await engine.dispose()
    assert checkpoint_threads() == threads


async def test_an_engine_used_again_after_a_dispose_is_checkpointed_again(tmp_path, quick):
    path = tmp_path / "again.db"
    threads = checkpoint_threads()
    engine = create_engine(f"sqlite+aiosqlite:///{path}")
    async with engine.begin() as connection:
        await connection.exec_driver_sql("CREATE TABLE blobs (x TEXT)")
    await engine.dispose()
    assert checkpoint_threads() == threads
    try:
        await write(engine, 10)
        assert checkpoint_threads() == threads + 1
        await until(lambda: os.path.getsize(path) > 1_500_000)
    finally:
        await engine.dispose()


def test_past_its_bound_the_wal_is_restarted_even_under_a_reader(tmp_path):
    """A reader's old snapshot keeps PASSIVE from copying everything; past MAX_WAL_FRAMES the
    checkpoint waits for it (RESTART) once it has ended, and the WAL starts afresh."""
    import sqlite3

    path = tmp_path / "bound.db"
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("CREATE TABLE blobs (x TEXT)")
    checkpoints = Checkpoints(str(path))
    checkpoints.MAX_WAL_FRAMES = 50
    writer.execute(f"INSERT INTO blobs (x) {ROWS}")
    reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM blobs").fetchone()  # holds the snapshot of the first insert
    writer.execute(f"INSERT INTO blobs (x) {ROWS}")
    threading.Timer(0.3, reader.execute, ("COMMIT",)).start()
    with sqlite3.connect(path, timeout=10) as connection:
        busy, frames, copied = checkpoints.checkpoint(connection)
    assert (busy, copied) == (0, frames) and frames > checkpoints.MAX_WAL_FRAMES
    writer.execute("INSERT INTO blobs (x) VALUES ('after')")
    with sqlite3.connect(path) as probe:
        _, frames_after, _ = probe.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert frames_after < 5  # the next write began the WAL anew
    reader.close()
    writer.close()

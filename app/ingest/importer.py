"""Bulk import of usage for backfills: CSV or NDJSON, through the same use-case as recordUsage.

The file is read, its rows turned into usage items and the items prepared (their own checks, the
values of their event rows: app.ingest.items.Preparer) by a forked child process, one batch ahead of
the transaction that records the batch before: that is about half of an import's work, and on a
second core it is off the writer's path. The child can start before the database layer is
imported (Reader; this module imports it only where it records), so that it reads the file
while the command starts: a second of imports against some four seconds for 200,000 rows."""

import asyncio
import csv
import gc
import multiprocessing
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from sys import intern
from typing import TYPE_CHECKING

from app.ingest import items as usage_items

if TYPE_CHECKING:
    from app.auth import Principal
    from app.runtime import Runtime

BATCH = 50_000
"""Rows per transaction. The API's limit (app.ingest.record.MAX_BATCH) bounds one request; a backfill pays a
transaction's fixed costs (the network, its services and plans read; the commit) once per this
many rows instead. A transaction's rows count in the report once it has committed."""
FIRST_BATCH = 5_000
"""The first transaction's rows; each next one twice as many, up to BATCH: the writer starts once
the first few thousand rows are read instead of waiting for a whole BATCH."""
FIELDS = usage_items.FIELDS
AHEAD = 200_000
"""Rows the child reads into usage items while it waits for the network's time zone to prepare
them with: the command's start-up, about a second, at some 5 µs per row."""
SLICE = 1_000
"""Rows read between two looks for the time zone while it has not come: a batch read meanwhile
ends where it came, and the child goes on with preparing at once (a batch of 50,000 rows read
to its end kept the writer waiting for a quarter of a second)."""


@dataclass
class ImportReport:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    problems: list[dict] = field(default_factory=list)


def _rows(path: Path) -> Iterator[dict | str]:
    """The file's rows, blank lines skipped; a row that is not a usage item at all (a line that
    is not a JSON object, a CSV row with too few or too many columns) comes as the reason why."""
    with path.open(newline="", encoding="utf-8") as handle:
        if path.suffix.lower() in (".ndjson", ".jsonl"):
            for line in handle:
                if line.strip():
                    row = usage_items.row_from_json(line)
                    yield "not a JSON object" if row is None else row
        else:
            reader = csv.reader(handle)
            header = next(reader, None) or []
            for values in reader:
                if len(values) == len(header):
                    yield dict(zip(header, values))
                elif values:  # an empty line is skipped, as csv.DictReader does
                    yield f"expected {len(header)} columns, found {len(values)}"


@dataclass(slots=True)
class _Batch:
    """Consecutive rows of the file (see FIRST_BATCH): the items, by their position among the rows,
    and the rows that are no usage item, with the reason."""

    size: int
    positions: list[int]
    items: list[tuple]
    "Plain tuples in Prepared's order: a list of them crosses the pipe several times faster."
    refused: list[tuple[int, str]]


def _read(path: Path, decode_service, network, pipe) -> None:
    """The child: every batch of the file down the pipe, then None; an error instead, if one
    stops the reading (the parent raises it). Until the parent sends the network's time zone and
    the database's dialect down `network` (Reader.prepare_for), the rows are read into usage items
    and kept, up to AHEAD of them."""
    gc.disable()  # as in the parent: the rows in flight are freed by reference counting
    try:
        rows = _rows(path)
        size = FIRST_BATCH
        preparer = None
        waiting: list[tuple[int, list[int], list[usage_items.UsageItem], list[tuple[int, str]]]] = []
        "The batches read before the time zone came, their items not yet prepared."
        while batch := _read_batch(rows, size, decode_service, lambda: preparer is None and network.poll()):
            size = min(2 * size, BATCH)
            waiting.append(batch)
            if preparer is None and sum(len(w[2]) for w in waiting) < AHEAD and not network.poll():
                continue
            preparer = preparer or usage_items.Preparer(*network.recv())
            _send(pipe, waiting, preparer)
        _send(pipe, waiting, preparer or usage_items.Preparer(*network.recv()))
        pipe.send(None)
    except Exception as error:  # noqa: BLE001 - handed to the parent, which raises it
        try:
            pipe.send(error)
        except Exception:  # noqa: BLE001 - an error that does not pickle goes as its text
            pipe.send(RuntimeError(f"reading {path} failed: {error!r}"))
    finally:
        pipe.close()


def _read_batch(rows: Iterator[dict | str], size: int, decode_service, arrived) -> tuple | None:
    """Up to `size` rows as (rows read, the items' positions, the items, the refused rows), or
    None at the file's end; read in slices of SLICE, fewer rows where `arrived()` says so
    after one."""
    positions, items, refused = [], [], []
    count = 0
    while count < size and (rows_slice := list(islice(rows, min(SLICE, size - count)))):
        for position, row in enumerate(rows_slice, count):
            if type(row) is str:
                refused.append((position, row))
            else:
                items.append(usage_items.item_from_row(row, decode_service))
                positions.append(position)
        count += len(rows_slice)
        if arrived():
            break
    return (count, positions, items, refused) if count else None


def _send(pipe, waiting: list, preparer: usage_items.Preparer) -> None:
    """The waiting batches, prepared, down the pipe (emptied)."""
    for size, positions, items, refused in waiting:
        prepared = [_plain(preparer.prepare(item, index)) for index, item in enumerate(items)]
        pipe.send(_Batch(size, positions, prepared, refused))
    waiting.clear()


def _plain(item: usage_items.Prepared) -> tuple:
    """A prepared item as the plain tuple that crosses the pipe, its consumer reference and its
    metric interned: a file repeats a few thousand of them over its rows, and pickle writes an
    object it has met before as a reference to it (a batch of 50,000 rows pickles, and unpickles
    in the writer, in half the time)."""
    key, service_id, ref, metric, quantity, occurred_at, period, problems = item
    return (key, service_id, intern(ref), intern(metric), quantity, occurred_at, period, problems)


class Reader:
    """The child that reads a file, forked at once: before the database layer is imported, the
    command's start-up and the child's reading overlap. It prepares the items once told the
    network's time zone (prepare_for); the pipe holds it to one batch ahead of the parent."""

    def __init__(self, path: Path, decode_service) -> None:
        # Forked, not spawned: the child starts at once with what this process has imported, and
        # only reads (no database, no event loop).
        fork = multiprocessing.get_context("fork")
        self.batches, outgoing = fork.Pipe(duplex=False)
        incoming, self._network = fork.Pipe(duplex=False)
        self.process = fork.Process(target=_read, args=(path, decode_service, incoming, outgoing), daemon=True,
                                    name="shareflow-import-reader")
        self.process.start()
        outgoing.close()
        incoming.close()

    def prepare_for(self, time_zone: str, dialect_name: str) -> None:
        try:
            self._network.send((time_zone, dialect_name))
        except BrokenPipeError:  # the child stopped already: what stopped it comes down `batches`
            pass

    def close(self) -> None:
        """Stop the child (done or not: a failed or cancelled import leaves the rest unread)."""
        if self.process.exitcode is None:
            self.process.kill()
        self.process.join()
        self.batches.close()
        self._network.close()


def _count(report: ImportReport, batch: _Batch, offset: int, recorded) -> None:
    """A committed batch's outcomes (app.ingest.results.Recorded, or None without items) into the report,
    problems by the file's row numbers."""
    from app.ingest.results import ItemResult

    outcomes: list[ItemResult | None] = [None] * batch.size
    for position, reason in batch.refused:
        outcomes[position] = ItemResult("REJECTED", problems=[usage_items.row_problem(offset + position, reason)])
    if recorded is not None:
        for position, result in zip(batch.positions, recorded.results):
            outcomes[position] = result
    for position, result in enumerate(outcomes):
        if result.status == "ACCEPTED":
            report.accepted += 1
        elif result.status == "DUPLICATE":
            report.duplicates += 1
        else:
            report.rejected += 1
            for problem in result.problems:
                field = problem.path[2] if len(problem.path) > 2 else None  # None: the row as a whole
                report.problems.append({"row": offset + position + 1, "field": field, "code": problem.code, "message": problem.message})


async def import_usage(rt: "Runtime", principal: "Principal", path: Path, decode_service, progress: bool = True,
                       reader: Reader | None = None) -> ImportReport:
    """Record every row, up to BATCH rows per transaction; safe to re-run (the keys decide duplicates).
    `reader`: one already reading `path` (the command starts it first), closed here; else one is started."""
    from app.ingest import record  # the database layer: see Reader

    reader = reader or Reader(path, decode_service)
    try:
        preparer = await record.preparer_for(rt, principal)
    except BaseException:
        reader.close()
        raise
    reader.prepare_for(preparer.zone, rt.engine.dialect.name)
    report = ImportReport()
    bar = None
    if progress:
        from tqdm import tqdm  # only when a bar is shown: importing it takes a tenth of a second

        bar = tqdm(unit=" events")
    # Python's cyclic garbage collector walked the tens of thousands of rows in flight over and
    # over (about 40% of an import's time). Rows are freed by reference counting; the few cycles
    # (the database layer's, some 20 objects a transaction) wait for the collector's return at
    # the end: collecting them after each transaction walked every row in flight for them.
    collecting = gc.isenabled()
    gc.disable()
    loop = asyncio.get_running_loop()
    # One batch records while the next is received and the one before is counted: both are work
    # of this thread that would otherwise wait for the other's SQL.
    in_flight: list[tuple[_Batch, int, asyncio.Task | None]] = []
    "At most two: the batch being counted, or about to be, and the one recording after it."
    try:
        offset = 0
        while True:
            try:
                batch = await loop.run_in_executor(None, reader.batches.recv)
            except EOFError:
                reader.process.join()
                raise RuntimeError(f"the reader of {path} stopped (exit code {reader.process.exitcode})") from None
            if isinstance(batch, Exception):
                # The rows read before the error are whole batches: they are recorded all the same.
                for done, done_offset, recording in in_flight:
                    _count(report, done, done_offset, await recording if recording is not None else None)
                in_flight.clear()
                raise batch
            if batch is not None:
                items = list(map(usage_items.as_prepared, batch.items))
                recording = asyncio.create_task(record.record_prepared(rt, principal, items)) if items else None
                in_flight.append((batch, offset, recording))
                offset += batch.size
            if in_flight and (batch is None or len(in_flight) == 2):
                done, done_offset, recording = in_flight[0]
                _count(report, done, done_offset, await recording if recording is not None else None)
                in_flight.pop(0)
                if bar is not None:
                    bar.update(done.size)
            if batch is None and not in_flight:
                break
    except BaseException:
        for _, _, recording in in_flight:
            if recording is not None:
                recording.cancel()  # not yet written, it writes nothing; written, a re-run finds its duplicates
        raise
    finally:
        reader.close()  # done, or this import failed or was cancelled before the file's end
        if collecting:
            gc.enable()
    if bar is not None:
        bar.close()
    return report

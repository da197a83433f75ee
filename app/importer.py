"""Bulk import of usage for backfills: CSV or NDJSON, through the same use-case as recordUsage.

The file is read, its rows turned into usage items and the items prepared (their own checks, the
values of their event rows: usage.Preparer) by a forked child process, one batch ahead of the
transaction that records the batch before: that is about half of an import's work, and on a
second core it is off the writer's path."""

import asyncio
import csv
import gc
import multiprocessing
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from pathlib import Path

from app.auth import Principal
from app.runtime import Runtime
from app.services import usage

BATCH = 50_000
"""Rows per transaction. The API's limit (usage.MAX_BATCH) bounds one request; a backfill pays a
transaction's fixed costs (the network, its services and plans read; the commit) once per this
many rows instead. A transaction's rows count in the report once it has committed."""
FIRST_BATCH = 5_000
"""The first transaction's rows; each next one twice as many, up to BATCH: the writer starts once
the first few thousand rows are read instead of waiting for a whole BATCH."""
FIELDS = usage.FIELDS


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
                    row = usage.row_from_json(line)
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


def _read(path: Path, decode_service, preparer: usage.Preparer, pipe) -> None:
    """The child: every batch of the file down the pipe, then None; an error instead, if one
    stops the reading (the parent raises it)."""
    gc.disable()  # as in the parent: the rows in flight are freed by reference counting
    try:
        rows = _rows(path)
        size = FIRST_BATCH
        while batch := list(islice(rows, size)):
            size = min(2 * size, BATCH)
            positions, items, refused = [], [], []
            for position, row in enumerate(batch):
                if type(row) is str:
                    refused.append((position, row))
                else:
                    items.append(tuple(preparer.prepare(usage.item_from_row(row, decode_service), len(items))))
                    positions.append(position)
            pipe.send(_Batch(len(batch), positions, items, refused))
        pipe.send(None)
    except Exception as error:  # noqa: BLE001 - handed to the parent, which raises it
        try:
            pipe.send(error)
        except Exception:  # noqa: BLE001 - an error that does not pickle goes as its text
            pipe.send(RuntimeError(f"reading {path} failed: {error!r}"))
    finally:
        pipe.close()


_as_prepared = partial(tuple.__new__, usage.Prepared)


def _count(report: ImportReport, batch: _Batch, offset: int, recorded: usage.Recorded | None) -> None:
    """A committed batch's outcomes into the report, problems by the file's row numbers."""
    outcomes: list[usage.ItemResult | None] = [None] * batch.size
    for position, reason in batch.refused:
        outcomes[position] = usage.ItemResult("REJECTED", problems=[usage.row_problem(offset + position, reason)])
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


async def import_usage(rt: Runtime, principal: Principal, path: Path, decode_service, progress: bool = True) -> ImportReport:
    """Record every row, up to BATCH rows per transaction; safe to re-run (the keys decide duplicates)."""
    report = ImportReport()
    preparer = await usage.preparer_for(rt, principal)
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
    # Forked, not spawned: the child starts at once with what this process has imported, and only
    # reads (no database, no event loop). The pipe holds it to one batch ahead.
    fork = multiprocessing.get_context("fork")
    incoming, outgoing = fork.Pipe(duplex=False)
    reader = fork.Process(target=_read, args=(path, decode_service, preparer, outgoing), daemon=True, name="shareflow-import-reader")
    reader.start()
    outgoing.close()
    loop = asyncio.get_running_loop()
    # One batch records while the next is received and the one before is counted: both are work
    # of this thread that would otherwise wait for the other's SQL.
    in_flight: list[tuple[_Batch, int, asyncio.Task | None]] = []
    "At most two: the batch being counted, or about to be, and the one recording after it."
    try:
        offset = 0
        while True:
            try:
                batch = await loop.run_in_executor(None, incoming.recv)
            except EOFError:
                raise RuntimeError(f"the reader of {path} stopped (exit code {reader.exitcode})") from None
            if isinstance(batch, Exception):
                # The rows read before the error are whole batches: they are recorded all the same.
                for done, done_offset, recording in in_flight:
                    _count(report, done, done_offset, await recording if recording is not None else None)
                in_flight.clear()
                raise batch
            if batch is not None:
                items = list(map(_as_prepared, batch.items))
                recording = asyncio.create_task(usage.record_usage(rt, principal, items, max_batch=None)) if items else None
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
        reader.kill()  # this import failed or was cancelled before the file's end
        for _, _, recording in in_flight:
            if recording is not None:
                recording.cancel()  # not yet written, it writes nothing; written, a re-run finds its duplicates
        raise
    finally:
        incoming.close()
        reader.join()
        if collecting:
            gc.enable()
    if bar is not None:
        bar.close()
    return report

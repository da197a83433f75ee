"""Bulk import of usage for backfills: CSV or NDJSON, through the same use-case as recordUsage."""

import csv
import gc
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

from app.auth import Principal
from app.runtime import Runtime
from app.services import usage

BATCH = 50_000
"""Rows per transaction. The API's limit (usage.MAX_BATCH) bounds one request; a backfill pays a
transaction's fixed costs (the network, its services and plans read; the commit) once per this
many rows instead. A transaction's rows count in the report once it has committed."""
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


def cached(decode_service):
    """decode_service, remembered per distinct id (a file names few services, many times)."""
    known: dict[str, int | None] = {}

    def decode(value: str) -> int | None:
        try:
            return known[value]
        except KeyError:
            result = decode_service(value)
            if len(known) < 10_000:
                known[value] = result
            return result

    return decode


async def import_usage(rt: Runtime, principal: Principal, path: Path, decode_service, progress: bool = True) -> ImportReport:
    """Record every row, BATCH rows per transaction; safe to re-run (the keys decide duplicates)."""
    report = ImportReport()
    rows = _rows(path)
    decode_service = cached(decode_service)
    bar = None
    if progress:
        from tqdm import tqdm  # only when a bar is shown: importing it takes a tenth of a second

        bar = tqdm(unit=" events")
    # Python's cyclic garbage collector walked the tens of thousands of rows in flight over and
    # over (about 40% of an import's time). Rows are freed by reference counting; the few cycles
    # (the database layer's) are collected after each transaction.
    collecting = gc.isenabled()
    gc.disable()
    try:
        offset = 0
        while batch := list(islice(rows, BATCH)):
            outcomes: list[usage.ItemResult | None] = [None] * len(batch)
            items = []
            positions = []
            for position, row in enumerate(batch):
                if type(row) is str:
                    outcomes[position] = usage.ItemResult("REJECTED", problems=[usage.row_problem(offset + position, row)])
                else:
                    items.append(usage.item_from_row(row, decode_service))
                    positions.append(position)
            if items:
                recorded = await usage.record_usage(rt, principal, items, max_batch=None)
                for position, result in zip(positions, recorded.results):
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
            offset += len(batch)
            if bar is not None:
                bar.update(len(batch))
            gc.collect(1)
    finally:
        if collecting:
            gc.enable()
    if bar is not None:
        bar.close()
    return report

"""Bulk import of usage for backfills: CSV or NDJSON, through the same use-case as recordUsage."""

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from tqdm import tqdm

from app.auth import Principal
from app.runtime import Runtime
from app.services import usage

BATCH = usage.MAX_BATCH
"Rows per recorded batch: the largest batch the use-case takes, so per-batch work is paid rarely."
FIELDS = usage.FIELDS


@dataclass
class ImportReport:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    problems: list[dict] = field(default_factory=list)


def _rows(path: Path) -> Iterator[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        if path.suffix.lower() in (".ndjson", ".jsonl"):
            for line in handle:
                if line.strip():
                    yield json.loads(line, parse_float=Decimal)
        else:
            yield from csv.DictReader(handle)


def _item(row: dict, decode_service) -> usage.UsageItem:
    """A row as a usage item; a value that does not parse becomes one the use-case refuses."""
    return usage.item_from_row(row, decode_service)


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
    """Record every row in batches; safe to re-run (the keys decide duplicates)."""
    report = ImportReport()
    batch: list[usage.UsageItem] = []
    bar = tqdm(unit=" events", disable=not progress)

    async def flush(offset: int) -> None:
        recorded = await usage.record_usage(rt, principal, batch)
        report.accepted += recorded.count("ACCEPTED")
        report.duplicates += recorded.count("DUPLICATE")
        report.rejected += recorded.count("REJECTED")
        for index, result in enumerate(recorded.results):
            for problem in result.problems:
                report.problems.append({"row": offset + index + 1, "field": problem.path[-1], "code": problem.code, "message": problem.message})
        bar.update(len(batch))
        batch.clear()

    decode_service = cached(decode_service)
    offset = 0
    for row in _rows(path):
        batch.append(_item(row, decode_service))
        if len(batch) == BATCH:
            await flush(offset)
            offset += BATCH
    if batch:
        await flush(offset)
    bar.close()
    return report

"""The bulk import (app/ingest/importer.py) on a real database: files beyond the API's batch limit, row
numbers in the report, and re-runs that double nothing."""

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from app.auth import identify
from app.ingest.importer import import_usage
from app.ingest.record import MAX_BATCH
from graph.ids import service_row_id
from models import ServiceUsage, UsageEvent
from tests.graph.conftest import mobility_network

ROWS = MAX_BATCH + 3


@pytest.fixture
async def mobility(api):
    return await mobility_network(api)


async def stored(rt, service_id: int) -> tuple[int, int]:
    """(events stored, events counted by the service's running totals)."""
    async with rt.sessions() as session:
        events = await session.scalar(select(func.count()).select_from(UsageEvent).where(UsageEvent.service_id == service_id))
        totals = await session.scalar(select(func.sum(ServiceUsage.events)).where(ServiceUsage.service_id == service_id))
    return events, totals or 0


async def test_a_file_beyond_one_batch_is_recorded_once_however_often_it_runs(rt, mobility, tmp_path):
    now = datetime.now(UTC).replace(microsecond=0).isoformat()
    rows = [
        {"idempotencyKey": f"b{i}", "serviceId": mobility.service_id, "consumerRef": f"c{i % 7}", "metric": "minutes",
         "quantity": "1.5", "occurredAt": now}
        for i in range(ROWS)
    ]
    rows[-2]["quantity"] = "1.0000001"  # rejected, with its row number
    rows[-1] = dict(rows[0])  # the first row again: a duplicate within the file
    path = tmp_path / "usage.ndjson"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    principal = (await identify(rt.sessions, f"Bearer {mobility.citycar.key}", rt.settings.operator_key, rt.keys)).principal
    service_id = service_row_id(mobility.service_id)

    first = await import_usage(rt, principal, path, service_row_id, progress=False)
    assert (first.accepted, first.duplicates, first.rejected) == (ROWS - 2, 1, 1)
    assert first.problems == [{"row": ROWS - 1, "field": "quantity", "code": "TOO_MANY_DECIMALS", "message": "at most 6 decimals"}]
    assert await stored(rt, service_id) == (ROWS - 2, ROWS - 2)

    again = await import_usage(rt, principal, path, service_row_id, progress=False)
    assert (again.accepted, again.duplicates, again.rejected) == (0, ROWS - 1, 1)
    assert await stored(rt, service_id) == (ROWS - 2, ROWS - 2)


async def test_rows_that_are_not_usage_items_are_rejected_with_their_row_numbers_and_the_rest_recorded(rt, mobility, tmp_path):
    now = datetime.now(UTC).replace(microsecond=0).isoformat()
    good = {"idempotencyKey": "k1", "serviceId": mobility.service_id, "consumerRef": "c", "metric": "minutes", "quantity": "2", "occurredAt": now}
    ndjson = tmp_path / "usage.ndjson"
    ndjson.write_text("\n".join([json.dumps(good), "{not json", "[1, 2]", json.dumps({**good, "idempotencyKey": "k2"})]) + "\n")
    header = ",".join(good)
    csv_file = tmp_path / "usage.csv"
    csv_file.write_text("\n".join([
        header,
        ",".join(str(v) for v in {**good, "idempotencyKey": "k3"}.values()),
        "k4,only,three",
        ",".join(str(v) for v in {**good, "idempotencyKey": "k5"}.values()) + ",extra",
        ",".join(str(v) for v in {**good, "idempotencyKey": "k6"}.values()),
    ]) + "\n")
    principal = (await identify(rt.sessions, f"Bearer {mobility.citycar.key}", rt.settings.operator_key, rt.keys)).principal

    lines = await import_usage(rt, principal, ndjson, service_row_id, progress=False)
    assert (lines.accepted, lines.rejected) == (2, 2)
    assert [(p["row"], p["field"], p["code"]) for p in lines.problems] == [(2, None, "INVALID"), (3, None, "INVALID")]
    table = await import_usage(rt, principal, csv_file, service_row_id, progress=False)
    assert (table.accepted, table.rejected) == (2, 2)
    assert [(p["row"], p["field"], p["code"], p["message"]) for p in table.problems] == [
        (2, None, "INVALID", "expected 6 columns, found 3"), (3, None, "INVALID", "expected 6 columns, found 7")]
    assert await stored(rt, service_row_id(mobility.service_id)) == (4, 4)


async def test_malformed_text_in_a_row_is_invalid_with_its_row_and_field_and_the_rest_recorded(rt, mobility, tmp_path):
    now = datetime.now(UTC).replace(microsecond=0).isoformat()
    good = {"idempotencyKey": "t1", "serviceId": mobility.service_id, "consumerRef": "c", "metric": "minutes", "quantity": "2", "occurredAt": now}
    ndjson = tmp_path / "usage.ndjson"
    ndjson.write_text("".join(json.dumps(row) + "\n" for row in [  # json.dumps writes the surrogate as "\ud800"
        {**good, "idempotencyKey": "t-\ud800"},
        {**good, "idempotencyKey": "t2", "consumerRef": "c\x00"},
        {**good, "idempotencyKey": "t3"},
    ]))
    csv_file = tmp_path / "usage.csv"
    csv_file.write_text("\n".join([
        ",".join(good),
        ",".join(str(v) for v in {**good, "idempotencyKey": "t4\x7f"}.values()),
        ",".join(str(v) for v in {**good, "idempotencyKey": "t5", "metric": "min\x85utes"}.values()),
        ",".join(str(v) for v in {**good, "idempotencyKey": "t6"}.values()),
    ]) + "\n")
    principal = (await identify(rt.sessions, f"Bearer {mobility.citycar.key}", rt.settings.operator_key, rt.keys)).principal

    lines = await import_usage(rt, principal, ndjson, service_row_id, progress=False)
    assert (lines.accepted, lines.rejected) == (1, 2)
    assert [(p["row"], p["field"], p["code"]) for p in lines.problems] == [(1, "idempotencyKey", "INVALID"), (2, "consumerRef", "INVALID")]
    table = await import_usage(rt, principal, csv_file, service_row_id, progress=False)
    assert (table.accepted, table.rejected) == (1, 2)
    assert [(p["row"], p["field"], p["code"]) for p in table.problems] == [(1, "idempotencyKey", "INVALID"), (2, "metric", "INVALID")]
    async with rt.sessions() as session:
        keys = set(await session.scalars(select(UsageEvent.idempotency_key).where(UsageEvent.service_id == service_row_id(mobility.service_id))))
    assert keys == {"t3", "t6"}


async def test_a_file_that_cannot_be_read_raises_its_error_and_leaves_no_reader_behind(rt, mobility, tmp_path):
    import multiprocessing

    now = datetime.now(UTC).replace(microsecond=0).isoformat()
    good = {"idempotencyKey": "k1", "serviceId": mobility.service_id, "consumerRef": "c", "metric": "minutes", "quantity": "2", "occurredAt": now}
    broken = tmp_path / "broken.ndjson"
    broken.write_bytes(json.dumps(good).encode() + b"\n\xff\xfe not UTF-8\n")
    principal = (await identify(rt.sessions, f"Bearer {mobility.citycar.key}", rt.settings.operator_key, rt.keys)).principal

    with pytest.raises(UnicodeDecodeError):
        await import_usage(rt, principal, broken, service_row_id, progress=False)
    with pytest.raises(FileNotFoundError):
        await import_usage(rt, principal, tmp_path / "missing.ndjson", service_row_id, progress=False)
    assert multiprocessing.active_children() == []
    assert await stored(rt, service_row_id(mobility.service_id)) == (0, 0)


async def test_the_first_rows_are_recorded_before_a_broken_part_further_on_stops_the_import(rt, mobility, tmp_path):
    """The first transaction holds the first rows (at most FIRST_BATCH: fewer where the network's
    time zone reached the reader earlier) and commits while the rest is read: a file broken
    further on keeps them, whole (a re-run of the mended file reports them as duplicates)."""
    from app.ingest.importer import FIRST_BATCH

    now = datetime.now(UTC).replace(microsecond=0).isoformat()
    rows = [
        {"idempotencyKey": f"f{i}", "serviceId": mobility.service_id, "consumerRef": f"c{i % 7}", "metric": "minutes",
         "quantity": "1", "occurredAt": now}
        for i in range(FIRST_BATCH + 1000)
    ]
    path = tmp_path / "broken-later.ndjson"
    path.write_bytes("".join(json.dumps(row) + "\n" for row in rows).encode() + b"\xff\xfe not UTF-8\n")
    principal = (await identify(rt.sessions, f"Bearer {mobility.citycar.key}", rt.settings.operator_key, rt.keys)).principal

    with pytest.raises(UnicodeDecodeError):
        await import_usage(rt, principal, path, service_row_id, progress=False)
    service_id = service_row_id(mobility.service_id)
    events, counted = await stored(rt, service_id)
    assert 0 < events <= FIRST_BATCH and counted == events
    async with rt.sessions() as session:
        keys = set(await session.scalars(select(UsageEvent.idempotency_key).where(UsageEvent.service_id == service_id)))
    assert keys == {f"f{i}" for i in range(events)}  # the file's first rows, none after them


def test_the_reader_starts_before_the_database_layer_is_imported():
    """The command forks its reader first (app.ingest.importer.Reader), so that the file is read while
    SQLAlchemy and the models load: the importer's module must not pull them in."""
    import subprocess
    import sys

    probe = "import sys, app.ingest.importer, app.server.cli; print(sorted(m for m in ('sqlalchemy', 'models', 'app.ingest.record') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("line", [
    '{"idempotencyKey": "k", "quantity": 1.50}\n', '  {"a": 1}\t\r\n', '{"a": 1} x', '{"a": 1}{"b": 2}', '[{"a": 1}]',
    '"text"', "", "   ", "\xa0{\"a\": 1}", '{"a": 1}\xa0', '{"a": NaN}', '{"a": 1e400}', "{", '{"a": 1,}',
])
def test_a_json_line_is_read_as_the_json_module_reads_it(line):
    """row_from_json gives what JSONDecoder.decode (numbers with a fraction or an exponent read
    through the decimal door) gives for an object, and None wherever decode raises or gives
    anything else."""
    import json

    from app.billing.money import read_decimal
    from app.ingest.items import row_from_json

    try:
        expected = json.JSONDecoder(parse_float=read_decimal).decode(line)
    except ValueError:
        expected = None
    if type(expected) is not dict:
        expected = None
    assert repr(row_from_json(line)) == repr(expected)


def test_a_batch_read_while_the_time_zone_arrives_ends_there():
    """The reader looks for the network's time zone after each SLICE rows while it waits for it:
    the batch it reads ends where the zone came, so that preparing starts at once."""
    from app.ingest.importer import SLICE, _read_batch

    rows = iter([*({"idempotencyKey": f"k{i}"} for i in range(3 * SLICE)), "not a JSON object"])
    looks = []

    def arrived():
        looks.append(len(looks))
        return len(looks) == 2

    count, positions, items, refused = _read_batch(rows, 10 * SLICE, str, arrived)
    assert count == 2 * SLICE and positions == list(range(2 * SLICE)) and len(items) == 2 * SLICE and not refused
    count, positions, items, refused = _read_batch(rows, 10 * SLICE, str, lambda: False)
    assert count == SLICE + 1 and refused == [(SLICE, "not a JSON object")] and items[0].idempotency_key == f"k{2 * SLICE}"
    assert _read_batch(rows, 10 * SLICE, str, lambda: False) is None

"""Event times written by recordUsage's driver-level insert are stored exactly as the column type
would store them: SQLite compares them as text, so one format, to the microsecond, in UTC."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.dialects.sqlite.aiosqlite import dialect as aiosqlite_dialect

from app.ingest.items import bind_time
from models import UsageEvent

TIMES = [
    datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC),
    datetime(2026, 11, 25, 10, 0, 0, 5, tzinfo=UTC),
    datetime(2026, 12, 1, 0, 30, tzinfo=timezone(timedelta(hours=1))),
    datetime(2026, 3, 29, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=-9, minutes=-30))),
    datetime(999, 1, 1, 0, 0, 1, tzinfo=timezone(timedelta(hours=-1))),
]


@pytest.mark.parametrize("dialect", [aiosqlite_dialect(), asyncpg_dialect()], ids=["sqlite", "postgresql"])
@pytest.mark.parametrize("at", TIMES, ids=["whole-second", "microseconds", "next-month-in-utc", "negative-offset", "three-digit-year"])
def test_an_event_time_is_bound_as_its_column_type_binds_it(dialect, at):
    column = UsageEvent.__table__.c.occurred_at.type.dialect_impl(dialect)
    assert bind_time(dialect.name)(at) == column.bind_processor(dialect)(at)

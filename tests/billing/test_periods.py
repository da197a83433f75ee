from datetime import UTC, datetime

import pytest

from app.billing.periods import PeriodError, next_period, parse_period, period_bounds, period_of


@pytest.mark.parametrize(
    ("instant", "tz", "expected"),
    [
        (datetime(2026, 11, 30, 23, 30, tzinfo=UTC), "UTC", "2026-11"),
        (datetime(2026, 11, 30, 23, 30, tzinfo=UTC), "Europe/Berlin", "2026-12"),
        (datetime(2027, 1, 1, 3, 0, tzinfo=UTC), "America/New_York", "2026-12"),
    ],
    ids=["utc", "berlin-is-already-in-december", "new-york-still-in-december"],
)
def test_an_instant_falls_in_the_month_of_the_networks_time_zone(instant, tz, expected):
    assert period_of(instant, tz) == expected


def test_period_bounds_are_local_midnights_in_utc():
    start, end = period_bounds("2026-03", "Europe/Berlin")
    assert start == datetime(2026, 2, 28, 23, 0, tzinfo=UTC)
    assert end == datetime(2026, 3, 31, 22, 0, tzinfo=UTC)  # summer time began in March


def test_december_is_followed_by_january():
    assert next_period("2026-12") == "2027-01"


@pytest.mark.parametrize("key", ["2026-13", "2026-1", "26-11", "", "2026-11-01", "1969-12"])
def test_malformed_period_keys_are_refused(key):
    with pytest.raises(PeriodError) as error:
        parse_period(key)
    assert error.value.code == "INVALID_PERIOD"


@pytest.mark.parametrize("tz", ["Mars/Olympus", "", "../etc/passwd", "UTC+1"])
def test_unknown_time_zones_are_refused(tz):
    with pytest.raises(PeriodError) as error:
        period_of(datetime(2026, 1, 1, tzinfo=UTC), tz)
    assert error.value.code == "INVALID_TIME_ZONE"

"""Settlement periods: calendar months in a network's time zone, keyed "2026-11"."""

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_KEY = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


class PeriodError(ValueError):
    """A period key or time zone that cannot be used; `code` is the API's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def zone(name: str) -> ZoneInfo:
    """The IANA zone of that name; raises PeriodError(INVALID_TIME_ZONE)."""
    if not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
        raise PeriodError("INVALID_TIME_ZONE", f"{name!r} is not an IANA time zone")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise PeriodError("INVALID_TIME_ZONE", f"{name!r} is not an IANA time zone") from None


def parse_period(key: str) -> tuple[int, int]:
    """(year, month) of a key such as "2026-11"; raises PeriodError(INVALID_PERIOD)."""
    match = _KEY.match(key or "")
    if not match or int(match.group(1)) < 1970:
        raise PeriodError("INVALID_PERIOD", f"{key!r} is not a period key like \"2026-11\"")
    return int(match.group(1)), int(match.group(2))


def period_key(year: int, month: int) -> str:
    return f"{year:04d}-{month:02d}"


def next_period(key: str) -> str:
    year, month = parse_period(key)
    return period_key(year + month // 12, month % 12 + 1)


def period_of(instant: datetime, time_zone: str) -> str:
    """The period an aware instant falls in, seen from the network's time zone."""
    local = instant.astimezone(zone(time_zone))
    return period_key(local.year, local.month)


def period_bounds(key: str, time_zone: str) -> tuple[datetime, datetime]:
    """[start, end) of a period as aware UTC instants (local midnight of the 1st, both ends)."""
    tz = zone(time_zone)
    year, month = parse_period(key)
    next_year, next_month = parse_period(next_period(key))
    start = datetime(year, month, 1, tzinfo=tz).astimezone(UTC)
    end = datetime(next_year, next_month, 1, tzinfo=tz).astimezone(UTC)
    return start, end

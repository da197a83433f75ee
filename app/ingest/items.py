"""A usage item as it arrives, and the checks that need neither the database nor the network's
services: shared by recordUsage, /usage.ndjson, the bulk import and quote. Light on purpose: the
import's reader process forks before the database layer is imported (app/ingest/importer.py)."""

import json
from collections.abc import Callable
from functools import partial
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import NamedTuple

from app.billing.money import EXACT, QUANTITY_PLACES, read_decimal, refusal
from app.billing.periods import PeriodError, period_bounds, period_of
from app.errors import DomainError, Problem
from app.services.text import CONSUMER_REFERENCE, IDEMPOTENCY_KEY, METRIC
from app.services.text import problem as text_problem

MAX_QUANTITY = Decimal(10) ** 9


def quantity_micros(quantity: Decimal, *path: str) -> int:
    """A usage quantity in integer millionths, once checked: finite, non-negative, at most 6
    decimals (trailing zeros do not count), at most 10^9 units. Raises DomainError with `path`.

    Exact and cheap (recordUsage checks every event): the quantity scaled by 10^6 must be whole."""
    if not quantity.is_finite():
        raise DomainError.of("INVALID", refusal(quantity), *path)
    if quantity < 0:
        raise DomainError.of("INVALID", "must not be negative", *path)
    micros = quantity.scaleb(QUANTITY_PLACES, EXACT)  # positional: see money.round_to_minor
    if micros != micros.to_integral_value():
        raise DomainError.of("TOO_MANY_DECIMALS", f"at most {QUANTITY_PLACES} decimals", *path)
    if quantity > MAX_QUANTITY:
        raise DomainError.of("QUANTITY_OVERFLOW", "at most 1000000000 units per event", *path)
    return int(micros)


def check_quantity(quantity: Decimal, *path: str) -> Decimal:
    """The quantity, once quantity_micros has found nothing wrong with it."""
    quantity_micros(quantity, *path)
    return quantity


class UsageItem(NamedTuple):
    """One event as the caller sent it; a tuple, cheap to build by the thousand."""

    idempotency_key: str
    service_id: int | None
    "None when the caller's id did not decode: reported NOT_FOUND like an unknown service."
    consumer_ref: str
    metric: str
    quantity: Decimal
    occurred_at: datetime


FIELDS = ("idempotencyKey", "serviceId", "consumerRef", "metric", "quantity", "occurredAt")
"The keys of a usage item as it arrives (GraphQL's UsageInput, an NDJSON line, a CSV header)."

_raw_decode = json.JSONDecoder(parse_float=read_decimal).raw_decode
"""One decoder for every line, where json.loads with parse_float would build one per call; a
number with a fraction or an exponent goes through the decimal door as its text."""
_JSON_SPACE = " \t\n\r"
"The whitespace JSON allows around a value."


def row_from_json(line: str) -> dict | None:
    """An NDJSON line as a raw row (numbers with a fraction kept exact), or None when the line is
    not a JSON object: such a line is rejected on its own (row_problem), the others recorded.

    What JSONDecoder.decode accepts, read with raw_decode: decode's two regular expressions for
    the whitespace around the value cost as much as the value (a bulk import reads millions)."""
    text = line.strip(_JSON_SPACE)
    try:
        row, end = _raw_decode(text)
    except (ValueError, RecursionError):  # a line nested too deeply is no usage item either
        return None
    return row if end == len(text) and type(row) is dict else None


def row_problem(index: int, message: str = "not a JSON object") -> Problem:
    """The one problem of a row that is not a usage item at all (bad JSON, wrong CSV columns):
    INVALID on the row's own path, as the NDJSON endpoint and the import report it."""
    return Problem(("events", str(index)), "INVALID", message)


def item_from_row(row, decode_service) -> UsageItem:
    """A raw usage row (keyed by FIELDS) as a UsageItem: the one conversion shared by recordUsage,
    the NDJSON endpoint and the bulk import. Values may be already typed (GraphQL's coerced Decimal
    and datetime) or text and numbers (NDJSON, CSV); a value that does not parse becomes one the
    use-case refuses with that field's path. `decode_service` turns the service's global id into
    its row id, or None."""
    get = row.get
    quantity = get("quantity")
    if not isinstance(quantity, Decimal):  # text (NDJSON, CSV) or an integer, through the decimal door
        quantity = read_decimal(quantity if type(quantity) is int or type(quantity) is str else "")
    occurred = get("occurredAt")
    if not isinstance(occurred, datetime):
        try:
            occurred = datetime.fromisoformat(str("" if occurred is None else occurred).strip())  # "Z" included
        except ValueError:
            occurred = datetime.min
    zone = occurred.tzinfo
    if zone is not UTC and zone is not None and occurred.utcoffset() is not None:
        # In UTC once: every later comparison and conversion is then a plain one (a time that
        # GraphQL's DateTime left to dateutil carries a zone object written in Python).
        try:
            occurred = occurred.astimezone(UTC)
        except OverflowError:  # before year 1 in UTC: as early as a time can be, refused as such
            occurred = datetime.min.replace(tzinfo=UTC)
    key = get("idempotencyKey")
    ref = get("consumerRef")
    metric = get("metric")
    service = get("serviceId")
    return _new_item((
        key if type(key) is str else str(key or ""),
        decode_service(service if type(service) is str else str(service or "")),
        ref if type(ref) is str else str(ref or ""),
        metric if type(metric) is str else str(metric or ""),
        quantity,
        occurred,
    ))


_new_item = partial(tuple.__new__, UsageItem)
"UsageItem without NamedTuple's own constructor, a Python function (one call per event)."


class Prepared(NamedTuple):
    """A usage item once the checks that need only the item and its network's time zone are done
    (Preparer.prepare), with the values its event row is written with. The bulk import prepares
    items in its reader process, beside the writer; recordUsage prepares them in the batch."""

    idempotency_key: str
    service_id: int | None
    consumer_ref: str
    metric: str
    quantity: int
    "In millionths; 0 when the quantity is invalid."
    occurred_at: object
    "As the column binds it (bind_time): compared as bound, with bounds bound alike. None without a time zone."
    period: str | None
    "The period occurred_at falls in (\"\", before every period, where the zone's year leaves 1..9999); None without a time zone."
    problems: tuple[Problem, ...]
    "The item's own problems; the batch adds those of its service and its time (app.ingest.context.Context.problems)."


class Preparer:
    """Prepares the items of one network (its time zone) for one database (how times bind)."""

    def __init__(self, time_zone: str, dialect_name: str) -> None:
        self.zone = time_zone
        self.bind_time = bind_time(dialect_name)
        self._period: tuple[datetime, datetime, str] | None = None

    def period_of(self, occurred: datetime) -> str:
        """periods.period_of, answered from the bounds of the last period found while the items
        fall in it (most do): a comparison instead of a time-zone conversion."""
        known = self._period
        if known is not None and known[0] <= occurred < known[1]:
            return known[2]
        try:
            key = period_of(occurred, self.zone)
        except OverflowError:  # beyond year 1 or 9999 in the zone: refused as before the first period or in the future
            return ""
        try:
            start, end = period_bounds(key, self.zone)
        except (PeriodError, OverflowError):  # before 1970 or in 9999-12: no bounds; refused all the same
            return key
        if period_of(start, self.zone) == key == period_of(end - timedelta(microseconds=1), self.zone):
            self._period = (start, end, key)
        return key

    def prepare(self, item: UsageItem, index: int) -> Prepared:
        """`index`: the item's position in its batch, which its problems' paths name."""
        key, service_id, ref, metric, quantity, occurred = item
        problems: list[Problem] = []
        if (message := text_problem(key, IDEMPOTENCY_KEY)) is not None:
            problems.append(Problem(("events", str(index), "idempotencyKey"), "INVALID", message))
        if (message := text_problem(ref, CONSUMER_REFERENCE)) is not None:
            problems.append(Problem(("events", str(index), "consumerRef"), "INVALID", message))
        if (message := text_problem(metric, METRIC)) is not None:
            problems.append(Problem(("events", str(index), "metric"), "INVALID", message))
        micros = 0
        try:
            micros = quantity_micros(quantity)
        except DomainError as error:
            problems.extend(Problem(("events", str(index), "quantity"), p.code, p.message) for p in error.problems)
        zone = occurred.tzinfo
        if zone is not UTC and (zone is None or occurred.utcoffset() is None):  # most come in UTC (item_from_row)
            problems.append(Problem(("events", str(index), "occurredAt"), "INVALID", "must carry a time zone"))
            bound = period = None
        else:
            bound = self.bind_time(occurred)
            period = self.period_of(occurred)
        # tuple.__new__: a NamedTuple's own constructor is a Python function, called once per event here.
        return as_prepared((key, service_id, ref, metric, micros, bound, period, tuple(problems) if problems else ()))


as_prepared = partial(tuple.__new__, Prepared)
"A Prepared from the tuple of its fields (as the import's reader sends them), without NamedTuple's own constructor."


def bind_time(dialect_name: str) -> Callable[[datetime], object]:
    """An aware time as a UTCDateTime column binds it (SQLite: UTC text to the microsecond, which
    sorts as the times do; PostgreSQL: the aware UTC value), without SQLAlchemy's two layers of
    processing per event. Tests hold it to the column type's own processor."""
    if dialect_name == "sqlite":
        return _utc_text
    return lambda at: at.astimezone(UTC)


def _utc_text(at: datetime) -> str:
    """What isoformat(" ", "microseconds") writes of the time in UTC before its "+00:00", at two
    thirds of isoformat's cost (recordUsage binds one per event)."""
    at = at.astimezone(UTC)
    return "%04d-%02d-%02d %02d:%02d:%02d.%06d" % (at.year, at.month, at.day, at.hour, at.minute, at.second, at.microsecond)

"""Running totals: what a batch of usage changes does to its consumers' lines and to its services'
usage and revenue, in the integers the database keeps (quantities in millionths, amounts in minor
units), and which changes would push a total past what a 64-bit column holds.

Pure: the write path reads the totals the changes touch, asks these functions what becomes of
them, and writes the answer. Adding an event to a line is linear (pricing.add_event: counts and
quantities move by the event's own contribution, whatever the line holds), so a batch's
contributions are summed per line first and each touched line is repriced once.
"""

from collections.abc import Callable, Iterable
from typing import NamedTuple

from app.billing.money import RoundingMode, from_micros, to_micros
from app.billing.pricing import Charge, LineUsage, add_event, is_clamped, price_line

MAX_TOTAL = 2**63 - 1
"The largest value a running total may take: SQLite would turn a sum past it into a float."

_NO_QUANTITY = from_micros(0)
"A line's mid_quantity where its charge has no clamp (the value from_micros(0) gives)."


class Change(NamedTuple):
    """One event folded into (sign 1) or out of (sign -1, a void) the totals."""

    period: str
    service_id: int
    consumer_id: int
    metric: str
    quantity: int
    "Millionths of a unit."
    sign: int


LineKey = tuple[str, int, int, str]
"(period, service id, consumer id, metric): one consumer's line."
MetricKey = tuple[str, int, str]
"(period, service id, metric): one service's usage of a metric."
StoredLine = tuple[int, int, int, int, int, int, int]
"""A line as the database keeps it: events, quantity (millionths), min, max and mid events, mid
quantity (millionths), amount (minor units)."""
EMPTY_LINE: StoredLine = (0, 0, 0, 0, 0, 0, 0)

ChargeOf = Callable[[int, str, str], Charge]
"The charge of (service id, period, metric) under that period's plan."


class Deltas(NamedTuple):
    lines: dict[LineKey, list[int]]
    "Per line: what the changes add to events, quantity, min, max and mid events, mid quantity."
    usage: dict[MetricKey, list[int]]
    "Per service and metric: what they add to its events and quantity."


def deltas_of(changes: Iterable[Change], charge_of: ChargeOf) -> Deltas:
    """The changes summed per line and per service metric."""
    changes = list(changes)
    lines: dict[LineKey, list[int]] = {}
    for period, service_id, consumer_id, metric, quantity, sign in changes:
        key = (period, service_id, consumer_id, metric)
        delta = lines.get(key)
        if delta is None:
            lines[key] = [sign, sign * quantity, 0, 0, 0, 0]
        else:
            delta[0] += sign
            delta[1] += sign * quantity
    metrics = {(period, service_id, metric) for period, service_id, _, metric in lines}
    clamped = {key for key in metrics if is_clamped(charge_of(key[1], key[0], key[2]))}
    if clamped:  # an event's share of the min/max/mid counts depends on its own quantity
        for period, service_id, consumer_id, metric, quantity, sign in changes:
            if (period, service_id, metric) in clamped:
                one = add_event(charge_of(service_id, period, metric), LineUsage.empty(), from_micros(quantity), sign)
                delta = lines[(period, service_id, consumer_id, metric)]
                delta[2] += one.min_events
                delta[3] += one.max_events
                delta[4] += one.mid_events
                delta[5] += to_micros(one.mid_quantity)
    usage = {key: [0, 0] for key in metrics}
    for (period, service_id, _, metric), delta in lines.items():
        totals = usage[(period, service_id, metric)]
        totals[0] += delta[0]
        totals[1] += delta[1]
    return Deltas(lines, usage)


class Repriced(NamedTuple):
    lines: dict[LineKey, StoredLine]
    "Each touched line's new totals and amount."
    revenue: dict[tuple[str, int], int]
    "Per (period, service): what the service's revenue moves by."
    overflow: bool
    "Whether a line's quantity or amount left MAX_TOTAL behind."


def reprice(stored: dict[LineKey, StoredLine], deltas: Deltas, charge_of: ChargeOf,
            exponent_of: Callable[[int], int], mode: RoundingMode) -> Repriced:
    """The touched lines with their deltas added, each priced once with its period's charge."""
    lines: dict[LineKey, StoredLine] = {}
    revenue: dict[tuple[str, int], int] = {}
    overflow = False
    for key in sorted(deltas.lines):
        period, service_id, _, metric = key
        old, delta = stored.get(key, EMPTY_LINE), deltas.lines[key]
        events, quantity, min_events = old[0] + delta[0], old[1] + delta[1], old[2] + delta[2]
        max_events, mid_events, mid_quantity = old[3] + delta[3], old[4] + delta[4], old[5] + delta[5]
        usage = LineUsage(events, from_micros(quantity), min_events, max_events, mid_events,
                          from_micros(mid_quantity) if mid_quantity else _NO_QUANTITY)
        amount = price_line(charge_of(service_id, period, metric), usage, exponent_of(service_id), mode) if events else 0
        overflow = overflow or quantity > MAX_TOTAL or amount > MAX_TOTAL
        revenue[(period, service_id)] = revenue.get((period, service_id), 0) + amount - old[6]
        lines[key] = (events, quantity, min_events, max_events, mid_events, mid_quantity, amount)
    return Repriced(lines, revenue, overflow)


def totals_overflow(repriced: Repriced, deltas: Deltas, usage_totals: dict[MetricKey, tuple[int, int]],
                    revenue_totals: dict[tuple[str, int], int]) -> bool:
    """Whether the batch pushes a line, a service's usage or a service's revenue past MAX_TOTAL."""
    return (
        repriced.overflow
        or any(usage_totals.get(key, (0, 0))[0] + events > MAX_TOTAL or usage_totals.get(key, (0, 0))[1] + quantity > MAX_TOTAL
               for key, (events, quantity) in deltas.usage.items())
        or any(revenue_totals.get(key, 0) + amount > MAX_TOTAL for key, amount in repriced.revenue.items())
    )


def overflowing(changes: list[Change], stored: dict[LineKey, StoredLine], usage_totals: dict[MetricKey, tuple[int, int]],
                revenue_totals: dict[tuple[str, int], int], charge_of: ChargeOf, exponent_of: Callable[[int], int],
                mode: RoundingMode) -> list[int]:
    """The positions of the changes that would each push a line's, a service's usage or a
    service's revenue total past MAX_TOTAL, taken one at a time in order as if recorded alone;
    a change that would is left out and the next ones are taken on the totals without it."""
    usage_totals = dict(usage_totals)
    revenue_totals = dict(revenue_totals)
    lines: dict[LineKey, tuple[LineUsage, int]] = {}
    positions = []
    for position, (period, service_id, consumer_id, metric, quantity, sign) in enumerate(changes):
        key = (period, service_id, consumer_id, metric)
        charge = charge_of(service_id, period, metric)
        if key not in lines:
            old = stored.get(key, EMPTY_LINE)
            lines[key] = (LineUsage(old[0], from_micros(old[1]), old[2], old[3], old[4], from_micros(old[5])), old[6])
        line, old_amount = lines[key]
        line = add_event(charge, line, from_micros(quantity), sign)
        amount = price_line(charge, line, exponent_of(service_id), mode) if line.events else 0
        events, total = usage_totals.get((period, service_id, metric), (0, 0))
        events, total = events + sign, total + sign * quantity
        revenue = revenue_totals.get((period, service_id), 0) + amount - old_amount
        if max(to_micros(line.quantity), amount, events, total, revenue) > MAX_TOTAL:
            positions.append(position)
            continue
        lines[key] = (line, amount)
        usage_totals[(period, service_id, metric)] = (events, total)
        revenue_totals[(period, service_id)] = revenue
    return positions

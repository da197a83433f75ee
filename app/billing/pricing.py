"""Pricing (DESIGN §4): from one consumer's usage of one metric in a period to its charge line.

Prices, fees and quantities are exact decimals in major units; a line is rounded once, at the
end, to integer minor units.
"""

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext
from enum import Enum
from typing import NamedTuple

from app.billing.money import (
    EXACT,
    QUANTITY_PLACES,
    BillingError,
    Problem,
    RoundingMode,
    check_decimal,
    round_to_minor,
)

_METRIC = re.compile(r"[A-Za-z0-9_.:-]+")
_METRIC_MAX_LENGTH = 64


class ChargeModel(str, Enum):
    """How a charge turns usage into an amount (DESIGN §4)."""

    PER_UNIT = "PER_UNIT"
    FLAT = "FLAT"
    GRADUATED = "GRADUATED"
    VOLUME = "VOLUME"
    PACKAGE = "PACKAGE"
    PERCENTAGE = "PERCENTAGE"


@dataclass(frozen=True)
class Tier:
    """Units up to `up_to` (inclusive; None: no bound) at `unit_price`, plus a `flat_fee`."""

    up_to: Decimal | None
    unit_price: Decimal
    flat_fee: Decimal = Decimal(0)


@dataclass(frozen=True)
class Charge:
    """A plan's price for one metric; amounts in major units, quantities in the metric's units.

    `rate_percent` is in percent (2.5 means 2.5 %); `min_per_event`/`max_per_event` clamp each
    event's amount of a PERCENTAGE charge.
    """

    metric: str
    model: ChargeModel
    unit_price: Decimal | None = None
    tiers: tuple[Tier, ...] = ()
    package_size: Decimal | None = None
    package_price: Decimal | None = None
    free_units: Decimal | None = None
    rate_percent: Decimal | None = None
    fixed_fee: Decimal | None = None
    min_per_event: Decimal | None = None
    max_per_event: Decimal | None = None


# Per model: the scalar parameters it requires and those it may take. Tiers are handled apart.
_PARAMETERS: dict[ChargeModel, tuple[frozenset[str], frozenset[str]]] = {
    ChargeModel.PER_UNIT: (frozenset({"unit_price"}), frozenset()),
    ChargeModel.FLAT: (frozenset({"unit_price"}), frozenset()),
    ChargeModel.GRADUATED: (frozenset(), frozenset()),
    ChargeModel.VOLUME: (frozenset(), frozenset()),
    ChargeModel.PACKAGE: (frozenset({"package_size", "package_price"}), frozenset({"free_units"})),
    ChargeModel.PERCENTAGE: (
        frozenset({"rate_percent"}),
        frozenset({"fixed_fee", "min_per_event", "max_per_event"}),
    ),
}
_SCALARS = (
    "unit_price",
    "package_size",
    "package_price",
    "free_units",
    "rate_percent",
    "fixed_fee",
    "min_per_event",
    "max_per_event",
)
# Bounds beyond "non-negative" (check_decimal's default).
_BOUNDS: dict[str, dict[str, object]] = {
    "package_size": {"exclusive": True},
    "rate_percent": {"maximum": Decimal(100)},
}
_TIERED = (ChargeModel.GRADUATED, ChargeModel.VOLUME)


def _graphql_name(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.title() for word in rest)


def validate_charges(charges: Sequence[Charge]) -> list[Problem]:
    """Every problem of a price plan; paths are relative to the list ("0", "tiers", "1", "upTo")."""
    if not charges:
        return [Problem((), "INVALID", "a plan needs at least one charge")]
    problems: list[Problem] = []
    first_index: dict[str, int] = {}
    for index, charge in enumerate(charges):
        at = (str(index),)
        metric_problems = _metric_problems(charge.metric, at + ("metric",))
        if not metric_problems and charge.metric in first_index:
            first = first_index[charge.metric]
            message = f"{charge.metric!r} is already charged by charge {first}"
            metric_problems.append(Problem(at + ("metric",), "INVALID", message))
        first_index.setdefault(charge.metric, index)
        problems += metric_problems
        problems += _parameter_problems(charge, at)
    return problems


def _metric_problems(metric: str, path: tuple[str, ...]) -> list[Problem]:
    if not metric:
        return [Problem(path, "INVALID", "must not be empty")]
    if len(metric) > _METRIC_MAX_LENGTH:
        return [Problem(path, "INVALID", f"at most {_METRIC_MAX_LENGTH} characters")]
    if not _METRIC.fullmatch(metric):
        return [Problem(path, "INVALID", "only letters, digits and _ . : - are allowed")]
    return []


def _parameter_problems(charge: Charge, at: tuple[str, ...]) -> list[Problem]:
    required, optional = _PARAMETERS[charge.model]
    problems: list[Problem] = []
    valid: set[str] = set()
    for name in _SCALARS:
        value = getattr(charge, name)
        path = at + (_graphql_name(name),)
        if value is None:
            if name in required:
                problems.append(Problem(path, "INVALID", f"required by {charge.model.value}"))
        elif name not in required | optional:
            problems.append(Problem(path, "INVALID", f"not used by {charge.model.value}"))
        else:
            found = check_decimal(value, path, max_places=QUANTITY_PLACES, **_BOUNDS.get(name, {}))
            problems += found
            if not found:
                valid.add(name)
    if {"min_per_event", "max_per_event"} <= valid and charge.min_per_event > charge.max_per_event:
        problems.append(Problem(at + ("minPerEvent",), "INVALID", "must not exceed maxPerEvent"))
    if charge.model in _TIERED:
        problems += _tier_problems(charge.tiers, at + ("tiers",))
    elif charge.tiers:
        problems.append(Problem(at + ("tiers",), "INVALID", f"not used by {charge.model.value}"))
    return problems


def _tier_problems(tiers: tuple[Tier, ...], at: tuple[str, ...]) -> list[Problem]:
    if not tiers:
        return [Problem(at, "INVALID_TIERS", "at least one tier is required")]
    problems: list[Problem] = []
    previous: Decimal | None = None
    for index, tier in enumerate(tiers):
        tier_at = at + (str(index),)
        for name in ("unit_price", "flat_fee"):
            problems += check_decimal(
                getattr(tier, name),
                tier_at + (_graphql_name(name),),
                max_places=QUANTITY_PLACES,
                code="INVALID_TIERS",
            )
        last = index == len(tiers) - 1
        problems += _up_to_problems(tier.up_to, previous, last, tier_at + ("upTo",))
        if tier.up_to is not None and tier.up_to.is_finite():
            previous = tier.up_to
    return problems


def _up_to_problems(
    up_to: Decimal | None, previous: Decimal | None, last: bool, path: tuple[str, ...]
) -> list[Problem]:
    if up_to is None:
        if last:
            return []
        return [Problem(path, "INVALID_TIERS", "only the last tier may be open-ended")]
    if last:
        return [Problem(path, "INVALID_TIERS", "the last tier must be open-ended (upTo null)")]
    bounds = check_decimal(
        up_to, path, max_places=QUANTITY_PLACES, exclusive=True, code="INVALID_TIERS"
    )
    if not bounds and previous is not None and up_to <= previous:
        message = f"must be greater than the previous tier's upTo {previous}"
        return [Problem(path, "INVALID_TIERS", message)]
    return bounds


class LineUsage(NamedTuple):
    """Totals of one consumer's line for one metric in one period: all pricing needs.

    `events` and `quantity` count every event. For a PERCENTAGE charge with a clamp the events
    are also counted by where their amount lands: at the minimum, at the maximum, or in between
    (`mid_events` and their `mid_quantity`); other charges leave those at zero. Integer-friendly
    so that it can be kept as running totals, one event added (or voided) at a time. A tuple:
    a batch reprices hundreds of lines, and a frozen dataclass took three times as long to make.
    """

    events: int
    quantity: Decimal
    min_events: int = 0
    max_events: int = 0
    mid_events: int = 0
    mid_quantity: Decimal = Decimal(0)

    @classmethod
    def empty(cls) -> "LineUsage":
        """No events yet."""
        return cls(events=0, quantity=Decimal(0))


def usage_of(charge: Charge, quantities: Iterable[Decimal]) -> LineUsage:
    """The line's totals from its events' raw quantities."""
    usage = LineUsage.empty()
    for quantity in quantities:
        usage = add_event(charge, usage, quantity)
    return usage


def add_event(charge: Charge, usage: LineUsage, quantity: Decimal, sign: int = 1) -> LineUsage:
    """The totals with one event added (sign 1) or removed (sign -1, a void).

    An event of a clamped PERCENTAGE charge counts at the minimum when its unclamped amount is
    at most `min_per_event`, else at the maximum when it is at least `max_per_event`.
    """
    if sign not in (1, -1):
        raise BillingError("INVALID", "sign must be 1 or -1")
    with localcontext(EXACT):
        totals = usage._replace(
            events=usage.events + sign, quantity=usage.quantity + sign * quantity
        )
        if not is_clamped(charge):
            return totals
        amount = _event_amount(charge, quantity)
        if charge.min_per_event is not None and amount <= charge.min_per_event:
            return totals._replace(min_events=usage.min_events + sign)
        if charge.max_per_event is not None and amount >= charge.max_per_event:
            return totals._replace(max_events=usage.max_events + sign)
        return totals._replace(
            mid_events=usage.mid_events + sign,
            mid_quantity=usage.mid_quantity + sign * quantity,
        )


def is_clamped(charge: Charge) -> bool:
    """Whether the charge's events count by where their amount lands (a PERCENTAGE with a clamp);
    for any other charge an event moves only a line's event count and quantity."""
    return charge.model is ChargeModel.PERCENTAGE and (
        charge.min_per_event is not None or charge.max_per_event is not None
    )


def _event_amount(charge: Charge, quantity: Decimal) -> Decimal:
    return quantity * charge.rate_percent / 100 + _or_zero(charge.fixed_fee)


def _or_zero(value: Decimal | None) -> Decimal:
    return Decimal(0) if value is None else value


def line_amount(charge: Charge, usage: LineUsage) -> Decimal:
    """The line's exact amount in major units, not rounded (DESIGN §4).

    A line without events does not exist and comes to 0; with events, a total quantity of 0
    falls in the first tier. The charge must have passed validate_charges.
    """
    if usage.events == 0:
        return Decimal(0)
    # The two models of most lines multiply in EXACT directly: entering localcontext costs four
    # times the multiplication, on a path that runs per line of every recorded batch.
    if charge.model == ChargeModel.PER_UNIT:
        return EXACT.multiply(usage.quantity, charge.unit_price)
    if charge.model == ChargeModel.FLAT:
        return EXACT.multiply(usage.events, charge.unit_price)
    with localcontext(EXACT):
        match charge.model:
            case ChargeModel.GRADUATED:
                return _graduated(_open_tiers(charge), usage.quantity)
            case ChargeModel.VOLUME:
                return _volume(_open_tiers(charge), usage.quantity)
            case ChargeModel.PACKAGE:
                return _package(charge, usage.quantity)
            case ChargeModel.PERCENTAGE:
                return _percentage(charge, usage)


def _open_tiers(charge: Charge) -> tuple[Tier, ...]:
    if not charge.tiers or charge.tiers[-1].up_to is not None:
        raise BillingError("INVALID_TIERS", "the last tier must be open-ended")
    return charge.tiers


def _graduated(tiers: tuple[Tier, ...], quantity: Decimal) -> Decimal:
    amount = Decimal(0)
    lower = Decimal(0)
    for index, tier in enumerate(tiers):
        # upTo is inclusive: usage enters the next tier only above the previous bound.
        if index > 0 and quantity <= lower:
            break
        upper = quantity if tier.up_to is None else min(quantity, tier.up_to)
        amount += tier.flat_fee + (upper - lower) * tier.unit_price
        lower = tier.up_to
    return amount


def _volume(tiers: tuple[Tier, ...], quantity: Decimal) -> Decimal:
    tier = next(t for t in tiers if t.up_to is None or quantity <= t.up_to)
    return quantity * tier.unit_price + tier.flat_fee


def _package(charge: Charge, quantity: Decimal) -> Decimal:
    billable = max(Decimal(0), quantity - _or_zero(charge.free_units))
    # Decimal // truncates; billable is non-negative, so this is ceil(billable / size).
    whole, part = divmod(billable, charge.package_size)
    packages = whole + (1 if part else 0)
    return packages * charge.package_price


def _percentage(charge: Charge, usage: LineUsage) -> Decimal:
    rate = charge.rate_percent / 100
    fee = _or_zero(charge.fixed_fee)
    if not is_clamped(charge):
        return usage.quantity * rate + usage.events * fee
    return (
        usage.min_events * _or_zero(charge.min_per_event)
        + usage.max_events * _or_zero(charge.max_per_event)
        + usage.mid_quantity * rate
        + usage.mid_events * fee
    )


def price_line(charge: Charge, usage: LineUsage, exponent: int, mode: RoundingMode) -> int:
    """The charge line in minor units: the exact amount rounded once with the network's mode."""
    return round_to_minor(line_amount(charge, usage), exponent, mode)

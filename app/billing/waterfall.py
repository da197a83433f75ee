"""Revenue sharing (DESIGN §5): the waterfall that splits a service's pools along its agreements.

Pools, leg amounts, flows and retained amounts are integer minor units; rule amounts, `min` and
`max` are exact decimals in major units; percentages are in percent.
"""

from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from enum import Enum

from app.billing.money import (
    EXACT,
    QUANTITY_PLACES,
    BillingError,
    Problem,
    RoundingMode,
    allocate,
    check_decimal,
    minor_to_decimal,
    round_to_minor,
)


class ShareKind(str, Enum):
    """What a leg takes from its payer's pool."""

    PERCENT = "PERCENT"
    PER_UNIT = "PER_UNIT"
    PER_EVENT = "PER_EVENT"
    REMAINDER = "REMAINDER"


class ShareBase(str, Enum):
    """What a PERCENT leg is a percentage of: the whole pool or what earlier legs left."""

    GROSS = "GROSS"
    REMAINING = "REMAINING"


FLOW_LIMIT = 2**62
"""The largest leg, flow, pool or retained amount of a waterfall, in minor units: the books and
statements sum a few of them in 64-bit columns. Bounded inputs can still multiply past it (10^12
per unit over 9x10^12 units)."""


class FlowOverflow(BillingError):
    """An amount of the waterfall beyond FLOW_LIMIT. `leg` is the key of the leg that took it
    there (its payer or the owner can end it), None when the consumers' payments alone do."""

    def __init__(self, leg: Hashable | None) -> None:
        super().__init__("FLOW_OVERFLOW", "an amount of the waterfall would exceed 2^62 minor units")
        self.leg = leg


@dataclass(frozen=True)
class Leg:
    """One agreement's rule: out of `payer`'s pool of the service, `payee` receives this.

    `percent` in percent; `amount` per unit or per event and `min`/`max` per period in major
    units; legs of a pool run in ascending (`priority`, `seq`), `seq` being creation order.
    """

    key: Hashable
    payer: Hashable
    payee: Hashable
    kind: ShareKind
    percent: Decimal | None = None
    amount: Decimal | None = None
    metric: str | None = None
    base: ShareBase = ShareBase.GROSS
    weight: Decimal | None = None
    priority: int = 100
    min: Decimal | None = None
    max: Decimal | None = None
    seq: int = 0


@dataclass(frozen=True)
class MetricUsage:
    """The whole service's usage of one metric in the period (all consumers)."""

    quantity: Decimal
    events: int


@dataclass(frozen=True)
class Split:
    """A service's period split, in minor units.

    `pools`: what each reached party receives from the service; `leg_amounts` by leg key;
    `flows` by (payer, payee), that payer's legs to that payee summed; `retained`: pool minus
    outflows, negative for a shortfall. Empty when the service had no usage.
    """

    pools: Mapping[Hashable, int] = field(default_factory=dict)
    leg_amounts: Mapping[Hashable, int] = field(default_factory=dict)
    flows: Mapping[tuple[Hashable, Hashable], int] = field(default_factory=dict)
    retained: Mapping[Hashable, int] = field(default_factory=dict)


def split_service(
    billing_party: Hashable,
    root_pool: int,
    legs: Sequence[Leg],
    usage: Mapping[str, MetricUsage],
    exponent: int,
    mode: RoundingMode,
) -> Split:
    """Run the waterfall of one service for one period.

    `root_pool` (minor units) is what consumers paid the billing party. Every party a chain of
    legs reaches from the billing party has a pool, split by its own legs once complete; legs of
    parties not reached are ignored. Raises BillingError AGREEMENT_CYCLE if the reached legs
    form a cycle, INVALID if two legs share a key, and FlowOverflow if a pool, leg amount, flow
    or retained amount lies beyond FLOW_LIMIT.
    """
    if len({leg.key for leg in legs}) != len(legs):
        raise BillingError("INVALID", "leg keys must be unique")
    order = _pool_order(billing_party, legs)
    if not any(metric.events for metric in usage.values()):
        return Split()
    legs_of: dict[Hashable, list[Leg]] = {}
    for leg in sorted(legs, key=lambda leg: (leg.priority, leg.seq)):
        legs_of.setdefault(leg.payer, []).append(leg)
    if abs(root_pool) > FLOW_LIMIT:
        raise FlowOverflow(None)
    pools = dict.fromkeys(order, 0)
    pools[billing_party] = root_pool
    leg_amounts: dict[Hashable, int] = {}
    flows: dict[tuple[Hashable, Hashable], int] = {}
    retained: dict[Hashable, int] = {}
    for party in order:
        own_legs = legs_of.get(party, [])
        amounts = _split_pool(pools[party], own_legs, usage, exponent, mode)
        for leg, amount in zip(own_legs, amounts):
            leg_amounts[leg.key] = amount
            flow = flows[(leg.payer, leg.payee)] = flows.get((leg.payer, leg.payee), 0) + amount
            pools[leg.payee] += amount
            if max(amount, flow, pools[leg.payee]) > FLOW_LIMIT:
                raise FlowOverflow(leg.key)
        retained[party] = pools[party] - sum(amounts)
        if retained[party] < -FLOW_LIMIT:  # fixed legs far beyond the pool: the largest is named
            raise FlowOverflow(own_legs[amounts.index(max(amounts))].key)
    return Split(pools=pools, leg_amounts=leg_amounts, flows=flows, retained=retained)


def _successors(edges: Iterable[tuple[Hashable, Hashable]]) -> dict[Hashable, list[Hashable]]:
    successors: dict[Hashable, list[Hashable]] = {}
    for payer, payee in edges:
        successors.setdefault(payer, []).append(payee)
    return successors


def _reachable(successors: Mapping[Hashable, list[Hashable]], start: Hashable) -> set[Hashable]:
    reached = {start}
    pending = [start]
    while pending:
        for payee in successors.get(pending.pop(), ()):
            if payee not in reached:
                reached.add(payee)
                pending.append(payee)
    return reached


def _pool_order(billing_party: Hashable, legs: Sequence[Leg]) -> list[Hashable]:
    """The reached parties, each after all of its reached payers (Kahn's algorithm)."""
    successors = _successors((leg.payer, leg.payee) for leg in legs)
    reached = _reachable(successors, billing_party)
    incoming = dict.fromkeys(reached, 0)
    for payer in reached:
        for payee in successors.get(payer, ()):
            incoming[payee] += 1
    ready = [billing_party] if incoming[billing_party] == 0 else []
    order: list[Hashable] = []
    while ready:
        party = ready.pop()
        order.append(party)
        for payee in successors.get(party, ()):
            incoming[payee] -= 1
            if incoming[payee] == 0:
                ready.append(payee)
    if len(order) < len(reached):
        raise BillingError("AGREEMENT_CYCLE", "the service's agreements form a cycle")
    return order


def _split_pool(
    pool: int,
    legs: Sequence[Leg],
    usage: Mapping[str, MetricUsage],
    exponent: int,
    mode: RoundingMode,
) -> list[int]:
    """Each leg's amount in minor units, in the order of `legs` (already in running order)."""
    amounts: dict[int, int] = {}
    taken = 0
    with localcontext(EXACT):
        for index, leg in enumerate(legs):
            if leg.kind is not ShareKind.REMAINDER:
                exact = _clamp(_exact_amount(leg, pool, taken, usage, exponent), leg.min, leg.max)
                amounts[index] = round_to_minor(exact, exponent, mode)
                taken += amounts[index]
    sharing = [index for index, leg in enumerate(legs) if leg.kind is ShareKind.REMAINDER]
    if sharing:
        parts = allocate(max(0, pool - taken), [legs[index].weight for index in sharing])
        amounts.update(zip(sharing, parts))
    return [amounts[index] for index in range(len(legs))]


def _exact_amount(
    leg: Leg, pool: int, taken: int, usage: Mapping[str, MetricUsage], exponent: int
) -> Decimal:
    """A fixed leg's amount in major units before clamping; `taken`: earlier legs, rounded."""
    if leg.kind is ShareKind.PERCENT:
        base = pool if leg.base is ShareBase.GROSS else max(0, pool - taken)
        return minor_to_decimal(base, exponent) * leg.percent / 100
    metric = usage.get(leg.metric)
    if metric is None:
        return Decimal(0)
    return leg.amount * (metric.quantity if leg.kind is ShareKind.PER_UNIT else metric.events)


def _clamp(amount: Decimal, low: Decimal | None, high: Decimal | None) -> Decimal:
    if low is not None:
        amount = max(amount, low)
    if high is not None:
        amount = min(amount, high)
    return amount


def closes_cycle(
    edges: Iterable[tuple[Hashable, Hashable]], new_edge: tuple[Hashable, Hashable]
) -> bool:
    """Whether adding payer -> payee `new_edge` to the (payer, payee) edges closes a cycle.

    A self-edge closes one.
    """
    payer, payee = new_edge
    return payer in _reachable(_successors(edges), payee)


# The parameters each kind requires; min and max are optional on every kind but REMAINDER.
_REQUIRED = {
    ShareKind.PERCENT: frozenset({"percent"}),
    ShareKind.PER_UNIT: frozenset({"amount", "metric"}),
    ShareKind.PER_EVENT: frozenset({"amount", "metric"}),
    ShareKind.REMAINDER: frozenset({"weight"}),
}
_CLAMPS = ("min", "max")


def validate_leg(leg: Leg, metrics: Collection[str], exponent: int) -> list[Problem]:
    """Every problem of one agreement's rule, with GraphQL paths relative to the rule.

    `metrics` are those the service charges; `exponent` is its currency's, and fixes the places
    of `min` and `max`.
    """
    required = _REQUIRED[leg.kind]
    allowed = required if leg.kind is ShareKind.REMAINDER else required | set(_CLAMPS)
    problems: list[Problem] = []
    valid: set[str] = set()
    for name in ("percent", "amount", "metric", "weight", *_CLAMPS):
        value = getattr(leg, name)
        if value is None:
            if name in required:
                problems.append(Problem((name,), "INVALID", f"required by {leg.kind.value}"))
        elif name not in allowed:
            problems.append(Problem((name,), "INVALID", f"not used by {leg.kind.value}"))
        else:
            found = _value_problems(name, value, metrics, exponent)
            problems += found
            if not found:
                valid.add(name)
    if set(_CLAMPS) <= valid and leg.min > leg.max:
        problems.append(Problem(("min",), "INVALID", "must not exceed max"))
    if leg.base is not ShareBase.GROSS and leg.kind is not ShareKind.PERCENT:
        problems.append(Problem(("base",), "INVALID", "only a PERCENT rule has a base"))
    if leg.priority < 0:
        problems.append(Problem(("priority",), "INVALID", "must be at least 0"))
    return problems


def _value_problems(
    name: str, value: Decimal | str, metrics: Collection[str], exponent: int
) -> list[Problem]:
    path = (name,)
    match name:
        case "metric":
            if value in metrics:
                return []
            return [Problem(path, "UNKNOWN_METRIC", f"the service charges no metric {value!r}")]
        case "percent":
            return check_decimal(value, path, max_places=QUANTITY_PLACES, maximum=Decimal(100))
        case "weight":
            return check_decimal(value, path, max_places=QUANTITY_PLACES, exclusive=True)
        case "amount":
            return check_decimal(value, path, max_places=QUANTITY_PLACES)
        case _:  # min and max: per period, in the currency's minor units at most
            return check_decimal(value, path, max_places=exponent)

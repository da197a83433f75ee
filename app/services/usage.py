"""Recording and voiding usage: events in, running totals and repriced lines out, O(1) per event.

An accepted event is committed with its effect on the totals in one transaction: the consumer's
line (repriced with the plan of the event's period), the service's usage per metric, and the
service's revenue (the root pool), so that live flows and statements never rescan the events.
"""

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import Principal
from app.billing.money import RoundingMode, currency_exponent, from_micros, to_micros
from app.billing.periods import period_of
from app.billing.pricing import Charge, LineUsage, add_event, price_line
from app.db import begin_write
from app.errors import DomainError, Problem, not_found
from app.runtime import Runtime
from app.services import catalog, periods
from app.services.usage_input import check_quantity
from app.sql import upsert
from models import Network, Party, Service, ServiceRevenue, ServiceUsage, UsageEvent, UsageLine
from models.types import utcnow

MAX_BATCH = 5000
KEY_MAX = 200
MAX_TOTAL = 2**63 - 1


@dataclass(frozen=True)
class UsageItem:
    idempotency_key: str
    service_id: int | None
    "None when the caller's id did not decode: reported NOT_FOUND like an unknown service."
    consumer_ref: str
    metric: str
    quantity: Decimal
    occurred_at: datetime


@dataclass
class ItemResult:
    status: str
    "ACCEPTED, DUPLICATE or REJECTED."
    event: UsageEvent | None = None
    problems: list[Problem] = field(default_factory=list)


@dataclass(frozen=True)
class Recorded:
    results: list[ItemResult]

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)


def may_record(principal: Principal, service: Service) -> bool:
    """The service's provider and the network's owner record and void its usage."""
    return principal.network_id == service.network_id and (
        principal.is_owner or principal.party_id == service.provider_id
    )


class _Context:
    """What a batch needs to know about its services, read once per batch."""

    def __init__(self, network: Network, services: dict[int, Service], now: datetime) -> None:
        self.network = network
        self.services = services
        self.now = now
        self.plans: dict[tuple[int, str], dict[str, Charge]] = {}
        self.closed: set[str] = set()

    async def load(self, session: AsyncSession, pairs: set[tuple[int, str]]) -> None:
        for service_id, period in pairs - self.plans.keys():
            plan = await catalog.plan_for(session, self.network.id, service_id, period)
            self.plans[(service_id, period)] = {c.metric: c for c in catalog.charges_of(plan)}

    def charge(self, service_id: int, period: str, metric: str) -> Charge | None:
        return self.plans.get((service_id, period), {}).get(metric)


def _check_item(principal: Principal, ctx: _Context, item: UsageItem, index: int, tolerance: timedelta) -> tuple[list[Problem], str | None]:
    """Every problem of one item, and its period when its time is usable."""
    at = ("events", str(index))
    problems: list[Problem] = []
    key = item.idempotency_key
    if not key or not key.strip() or len(key) > KEY_MAX:
        problems.append(Problem((*at, "idempotencyKey"), "INVALID", f"must be 1 to {KEY_MAX} characters"))
    service = ctx.services.get(item.service_id) if item.service_id is not None else None
    if service is None:
        problems.append(Problem((*at, "serviceId"), "NOT_FOUND", "service not found"))
    elif not may_record(principal, service):
        problems.append(Problem((*at, "serviceId"), "FORBIDDEN", "only the service's provider or the owner may record its usage"))
    ref = item.consumer_ref
    if not ref or not ref.strip() or len(ref) > KEY_MAX or any(ord(c) < 32 for c in ref):
        problems.append(Problem((*at, "consumerRef"), "INVALID", f"must be 1 to {KEY_MAX} printable characters"))
    try:
        check_quantity(item.quantity, *at, "quantity")
    except DomainError as error:
        problems.extend(error.problems)
    period = None
    occurred = item.occurred_at
    if occurred.tzinfo is None or occurred.utcoffset() is None:
        problems.append(Problem((*at, "occurredAt"), "INVALID", "must carry a time zone"))
    elif occurred > ctx.now + tolerance:
        problems.append(Problem((*at, "occurredAt"), "INVALID", "lies too far in the future"))
    else:
        period = period_of(occurred, ctx.network.time_zone)
        if period < ctx.network.first_period:
            problems.append(
                Problem((*at, "occurredAt"), "BEFORE_FIRST_PERIOD", f"lies before the first period {ctx.network.first_period}")
            )
        elif period in ctx.closed:
            problems.append(Problem((*at, "occurredAt"), "PERIOD_CLOSED", f"period {period} is closed"))
    return problems, period


def _same_payload(event: UsageEvent, item: UsageItem, consumer_ref: str | None) -> bool:
    return (
        event.service_id == item.service_id
        and consumer_ref == item.consumer_ref
        and event.metric == item.metric
        and event.quantity == to_micros(item.quantity)
        and event.occurred_at == item.occurred_at
    )


async def record_usage(rt: Runtime, principal: Principal, items: list[UsageItem]) -> Recorded:
    """Record a batch; each item is accepted, a duplicate of an earlier event, or rejected with
    its problems. Accepted items are committed before this returns."""
    if len(items) > MAX_BATCH:
        raise DomainError.of("BATCH_TOO_LARGE", f"at most {MAX_BATCH} events per batch", "events")
    results: list[ItemResult | None] = [None] * len(items)
    async with rt.sessions() as session:
        await begin_write(session)
        network = await session.get(Network, principal.network_id)
        service_ids = {i.service_id for i in items if i.service_id is not None}
        services = {
            s.id: s
            for s in await session.scalars(
                select(Service).where(Service.network_id == network.id, Service.id.in_(service_ids))
            )
        }
        ctx = _Context(network, services, rt.now())
        ctx.closed = await periods.closed_keys(session, network.id)
        tolerance = timedelta(seconds=rt.settings.future_tolerance_seconds)

        checked: list[tuple[int, UsageItem, str]] = []
        for index, item in enumerate(items):
            problems, period = _check_item(principal, ctx, item, index, tolerance)
            if not problems:
                checked.append((index, item, period))
            else:
                results[index] = ItemResult("REJECTED", problems=problems)
        await ctx.load(session, {(item.service_id, period) for _, item, period in checked})
        valid: list[tuple[int, UsageItem, str]] = []
        for index, item, period in checked:
            if ctx.charge(item.service_id, period, item.metric) is None:
                results[index] = ItemResult(
                    "REJECTED",
                    problems=[Problem(("events", str(index), "metric"), "UNKNOWN_METRIC", f"the service does not charge {item.metric!r} in {period}")],
                )
            else:
                valid.append((index, item, period))

        fresh = await _claim_keys(session, network.id, valid, services, results)
        await _apply(session, ctx, [(event, 1) for event in fresh])
        await session.commit()
    return Recorded([r for r in results if r is not None])


def _chunks(rows: list, size: int = 1000):
    """Bound the parameters of one statement (PostgreSQL takes at most 32,767)."""
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


async def _consumers(session: AsyncSession, network_id: int, refs: set[tuple[int, str]]) -> dict[tuple[int, str], int]:
    """Consumer ids by (merchant of record, reference); unknown references become consumers."""
    wanted = sorted(refs)
    for chunk in _chunks(wanted):
        await session.execute(
            upsert(session, Party)
            .values(
                [
                    {"network_id": network_id, "kind": "CONSUMER", "name": ref, "external_ref": ref,
                     "billing_party_id": merchant, "active": True, "created_at": utcnow()}
                    for merchant, ref in chunk
                ]
            )
            .on_conflict_do_nothing(index_elements=["network_id", "billing_party_id", "external_ref"])
        )
    found: dict[tuple[int, str], int] = {}
    for chunk in _chunks(wanted):
        rows = await session.execute(
            select(Party.id, Party.billing_party_id, Party.external_ref).where(
                Party.network_id == network_id,
                Party.kind == "CONSUMER",
                tuple_(Party.billing_party_id, Party.external_ref).in_(chunk),
            )
        )
        found.update({(merchant, ref): party_id for party_id, merchant, ref in rows})
    return found


async def _events_by_key(session: AsyncSession, network_id: int, keys: list[str]) -> dict[str, tuple[UsageEvent, str]]:
    """Stored events by idempotency key, each with its consumer's reference."""
    found = {}
    for chunk in _chunks(keys):
        rows = await session.execute(
            select(UsageEvent, Party.external_ref)
            .join(Party, Party.id == UsageEvent.consumer_id)
            .where(UsageEvent.network_id == network_id, UsageEvent.idempotency_key.in_(chunk))
        )
        found.update({event.idempotency_key: (event, ref) for event, ref in rows})
    return found


async def _claim_keys(session, network_id, valid, services, results) -> list[UsageEvent]:
    """Insert the events whose keys are new; the unique key decides, also between concurrent
    batches. An item whose key is taken is a duplicate (same payload) or a conflict, and writes
    nothing, not even its consumer."""
    first_of_key: dict[str, int] = {}
    for index, item, _ in valid:
        first_of_key.setdefault(item.idempotency_key, index)
    stored = await _events_by_key(session, network_id, list(first_of_key))
    new = [(index, item, period) for index, item, period in valid if item.idempotency_key not in stored and first_of_key[item.idempotency_key] == index]
    consumers = await _consumers(session, network_id, {(services[i.service_id].billed_by_id, i.consumer_ref) for _, i, _ in new})
    rows = [
        {
            "network_id": network_id,
            "service_id": item.service_id,
            "consumer_id": consumers[(services[item.service_id].billed_by_id, item.consumer_ref)],
            "idempotency_key": item.idempotency_key,
            "metric": item.metric,
            "quantity": to_micros(item.quantity),
            "occurred_at": item.occurred_at,
            "period": period,
            "recorded_at": utcnow(),
        }
        for _, item, period in new
    ]
    inserted: set[str] = set()
    for chunk in _chunks(rows):
        returned = await session.execute(
            upsert(session, UsageEvent)
            .values(chunk)
            .on_conflict_do_nothing(index_elements=["network_id", "idempotency_key"])
            .returning(UsageEvent.idempotency_key)
        )
        inserted.update(key for (key,) in returned)
    stored.update(await _events_by_key(session, network_id, sorted({i.idempotency_key for _, i, _ in valid} - stored.keys())))
    fresh = []
    for index, item, _ in valid:
        event, ref = stored[item.idempotency_key]
        if item.idempotency_key in inserted and first_of_key[item.idempotency_key] == index:
            results[index] = ItemResult("ACCEPTED", event=event)
            fresh.append(event)
        elif _same_payload(event, item, ref):
            results[index] = ItemResult("DUPLICATE", event=event)
        else:
            results[index] = ItemResult(
                "REJECTED",
                problems=[Problem(("events", str(index), "idempotencyKey"), "IDEMPOTENCY_CONFLICT", "the key was used for another event")],
            )
    return fresh


def _line_usage(line: UsageLine) -> LineUsage:
    return LineUsage(
        events=line.events,
        quantity=from_micros(line.quantity),
        min_events=line.min_events,
        max_events=line.max_events,
        mid_events=line.mid_events,
        mid_quantity=from_micros(line.mid_quantity),
    )


async def _apply(session: AsyncSession, ctx: _Context, changes: list[tuple[UsageEvent, int]]) -> None:
    """Fold events in (sign 1) or out (sign -1) of the running totals and reprice what they touch."""
    if not changes:
        return
    network = ctx.network
    await ctx.load(session, {(e.service_id, e.period) for e, _ in changes})
    keys = sorted({(e.period, e.service_id, e.consumer_id, e.metric) for e, _ in changes})
    # Lines are created empty first and then locked in key order: concurrent writers on
    # PostgreSQL wait for each other instead of losing an update (SQLite holds its write lock).
    for chunk in _chunks(keys):
        await session.execute(
            upsert(session, UsageLine)
            .values([{"network_id": network.id, "period": p, "service_id": s, "consumer_id": c, "metric": m} for p, s, c, m in chunk])
            .on_conflict_do_nothing()
        )
    key_columns = (UsageLine.period, UsageLine.service_id, UsageLine.consumer_id, UsageLine.metric)
    lines: dict[tuple, UsageLine] = {}
    for chunk in _chunks(keys):
        rows = await session.scalars(
            select(UsageLine)
            .where(UsageLine.network_id == network.id, tuple_(*key_columns).in_(chunk))
            .order_by(*key_columns)
            .with_for_update()
        )
        lines.update({(line.period, line.service_id, line.consumer_id, line.metric): line for line in rows})
    usage = {key: _line_usage(line) for key, line in lines.items()}
    service_usage: dict[tuple[str, int, str], list[int]] = defaultdict(lambda: [0, 0])
    for event, sign in changes:
        key = (event.period, event.service_id, event.consumer_id, event.metric)
        charge = ctx.charge(event.service_id, event.period, event.metric)
        usage[key] = add_event(charge, usage[key], from_micros(event.quantity), sign)
        totals = service_usage[(event.period, event.service_id, event.metric)]
        totals[0] += sign
        totals[1] += sign * event.quantity

    mode = RoundingMode(network.rounding_mode)
    revenue: dict[tuple[str, int], int] = defaultdict(int)
    for key, line in lines.items():
        period, service_id, _, metric = key
        new = usage[key]
        exponent = currency_exponent(ctx.services[service_id].currency)
        amount = price_line(ctx.charge(service_id, period, metric), new, exponent, mode) if new.events else 0
        quantity, mid_quantity = to_micros(new.quantity), to_micros(new.mid_quantity)
        if quantity > MAX_TOTAL:
            raise DomainError.of("QUANTITY_OVERFLOW", "a running total would leave the 64-bit range", "events")
        revenue[(period, service_id)] += amount - line.amount
        line.events, line.quantity = new.events, quantity
        line.min_events, line.max_events = new.min_events, new.max_events
        line.mid_events, line.mid_quantity = new.mid_events, mid_quantity
        line.amount = amount

    for (period, service_id, metric), (events, quantity) in sorted(service_usage.items()):
        stmt = upsert(session, ServiceUsage).values(
            network_id=network.id, period=period, service_id=service_id, metric=metric, events=events, quantity=quantity
        )
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=["network_id", "period", "service_id", "metric"],
                set_={"events": ServiceUsage.events + stmt.excluded.events, "quantity": ServiceUsage.quantity + stmt.excluded.quantity},
            )
        )
    for (period, service_id), delta in sorted(revenue.items()):
        stmt = upsert(session, ServiceRevenue).values(network_id=network.id, period=period, service_id=service_id, amount=delta)
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=["network_id", "period", "service_id"],
                set_={"amount": ServiceRevenue.amount + stmt.excluded.amount},
            )
        )
    await session.flush()


async def void_usage(rt: Runtime, principal: Principal, idempotency_key: str) -> UsageEvent:
    """The event stops counting; its line, the service's usage and revenue follow at once."""
    async with rt.sessions() as session:
        await begin_write(session)
        event = await session.scalar(
            select(UsageEvent)
            .where(UsageEvent.network_id == principal.network_id, UsageEvent.idempotency_key == idempotency_key)
            .with_for_update()
        )
        service = None if event is None else await session.get(Service, event.service_id)
        if event is None or not may_record(principal, service):
            raise not_found("usage event", "idempotencyKey")
        if event.voided_at is not None:
            raise DomainError.of("ALREADY_VOIDED", "the event was voided already", "idempotencyKey")
        network = await session.get(Network, event.network_id)
        if await periods.is_closed(session, network.id, event.period):
            raise DomainError.of("PERIOD_CLOSED", f"period {event.period} is closed", "idempotencyKey")
        event.voided_at = utcnow()
        await _apply(session, _Context(network, {service.id: service}, rt.now()), [(event, -1)])
        await session.commit()
    return event

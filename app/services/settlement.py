"""Settlement: statements (live drafts of open periods, final ones of closed periods), closing a
period into final statements and booked entries, and corrections of closed periods.

The books are `ledger_entries`: closing books a period's flows, a correction books the signed
difference between a closed period recomputed and what was booked for it, into the oldest open
period. Every entry debits its payer and credits its payee, so the books always sum to zero.
"""

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import Principal
from app.billing.money import from_micros
from app.billing.periods import next_period
from app.billing.settlement import (
    Direction, Entry, StatementLine, Totals, split_entries, statement_lines, totals,
)
from app.errors import not_found
from app.runtime import Runtime
from app.services import periods, validate
from app.services.access import consumer_data_services, visible_parties, visible_services
from app.services.flows import service_splits
from models import (
    ClosedPeriod,
    FinalStatement,
    FinalStatementCharge,
    FinalStatementLine,
    LedgerEntry,
    Network,
    Party,
    Service,
    UsageLine,
)


@dataclass(frozen=True)
class Flow:
    """Money from one party to another for one service, booked into or live in `period`."""

    payer_id: int
    payee_id: int
    service_id: int
    period: str
    amount: int
    "Minor units of `currency`."
    currency: str
    adjustment: bool = False
    origin_period: str | None = None


@dataclass(frozen=True)
class InvoiceLine:
    """A consumer's charge line for one service and metric (quantity exact, amount in minor units)."""

    service_id: int
    metric: str
    quantity: Decimal
    events: int
    amount: int


@dataclass(frozen=True)
class Statement:
    party: Party
    period: str
    currency: str
    status: str
    "DRAFT while the period is open, FINAL once closed."
    number: str | None
    lines: list[StatementLine]
    charges: list[InvoiceLine]
    "A consumer's invoice lines; empty for other parties."

    @property
    def totals(self) -> Totals:
        return totals(self.lines)


async def oldest_open_period(session: AsyncSession, network: Network) -> str:
    """Periods close oldest first, so the oldest open one follows the newest closed one."""
    newest = await session.scalar(select(func.max(ClosedPeriod.key)).where(ClosedPeriod.network_id == network.id))
    return next_period(newest) if newest else network.first_period


async def consumer_payments(
    session: AsyncSession, network_id: int, period: str, service_ids: list[int], consumer_id: int | None = None
) -> dict[int, dict[int, int]]:
    """What each consumer pays for each service in the period: {service: {consumer: minor units}}."""
    stmt = (
        select(UsageLine.service_id, UsageLine.consumer_id, func.sum(UsageLine.amount))
        .where(UsageLine.network_id == network_id, UsageLine.period == period, UsageLine.service_id.in_(service_ids))
        .group_by(UsageLine.service_id, UsageLine.consumer_id)
    )
    if consumer_id is not None:
        stmt = stmt.where(UsageLine.consumer_id == consumer_id)
    payments: dict[int, dict[int, int]] = defaultdict(dict)
    for service_id, consumer, amount in await session.execute(stmt):
        if amount:
            payments[service_id][consumer] = int(amount)
    return payments


async def period_entries(
    session: AsyncSession, network: Network, services: list[Service], period: str, consumer_id: int | None = None
) -> list[Entry]:
    """A period's entries recomputed from the running totals: every consumer's payment (only
    `consumer_id`'s when given) and every flow of the waterfall."""
    payments = await consumer_payments(session, network.id, period, [s.id for s in services], consumer_id)
    entries = []
    for split in await service_splits(session, network, services, period):
        service = split.service
        entries += split_entries(service.id, service.billed_by_id, payments.get(service.id, {}), split.split)
    return entries


async def _consumers_together(session: AsyncSession, network: Network, services: list[Service], period: str) -> list[Entry]:
    """A period's entries with each service's consumers as one payer: enough for any statement but
    a consumer's own, and it does not grow with the number of consumers."""
    entries = []
    for split in await service_splits(session, network, services, period):
        payments = {None: split.revenue} if split.revenue else {}
        entries += split_entries(split.service.id, split.service.billed_by_id, payments, split.split)
    return entries


def _entry(row: LedgerEntry, consumers: set[int]) -> Entry:
    return Entry(row.service_id, row.payer_id, row.payee_id, row.amount, row.payer_id in consumers, row.adjustment,
                 row.origin_period if row.adjustment else None)


async def booked_entries(session: AsyncSession, network_id: int, *conditions) -> list[Entry]:
    rows = list(await session.scalars(select(LedgerEntry).where(LedgerEntry.network_id == network_id, *conditions).order_by(LedgerEntry.id)))
    consumers = set(
        await session.scalars(
            select(Party.id).where(Party.id.in_({r.payer_id for r in rows}), Party.kind == "CONSUMER")
        )
    ) if rows else set()
    return [_entry(row, consumers) for row in rows]


async def revenue_flows(
    rt: Runtime, principal: Principal, period: str, service_id: int | None = None, party_id: int | None = None
) -> list[Flow]:
    """Flows between parties in a period: as booked once it is closed, else live from the running
    totals, with the corrections of closed periods booked into it. A party other than the owner
    sees only the flows it pays or receives."""
    async with rt.sessions() as session:
        network = await session.get(Network, principal.network_id)
        key = periods.parse_key(period, "period")
        stmt = select(Service).where(visible_services(principal)).order_by(Service.id)
        if service_id is not None:
            stmt = stmt.where(Service.id == service_id)
        services = list(await session.scalars(stmt))
        if service_id is not None and not services:
            raise not_found("service", "serviceId")
        ids = [s.id for s in services]
        entries = [] if await periods.is_closed(session, network.id, key) else await _consumers_together(session, network, services, key)
        entries += await booked_entries(session, network.id, LedgerEntry.booked_period == key, LedgerEntry.service_id.in_(ids))
    currency_of = {s.id: s.currency for s in services}
    me = principal.party_id
    return [
        Flow(e.payer, e.payee, e.service, key, e.amount, currency_of[e.service], e.adjustment, e.origin_period)
        for e in entries
        if not e.from_consumer
        and (principal.is_owner or me in (e.payer, e.payee))
        and (party_id is None or party_id in (e.payer, e.payee))
    ]


def may_see_statement(principal: Principal, party: Party) -> bool:
    """The owner sees every statement, a party its own; a consumer's invoice is consumer data, for
    whoever may see that consumer (its merchant of record, the provider of its services)."""
    if principal.network_id != party.network_id:
        return False
    return principal.is_owner or principal.party_id == party.id or party.kind == "CONSUMER"


async def statement(
    rt: Runtime, principal: Principal, party_id: int, period: str | None, currency: str | None
) -> Statement | None:
    """A party's statement: the final one of a closed period, else the live draft. None for a
    party the caller may not see. Raises DomainError INVALID_PERIOD or INVALID_CURRENCY."""
    async with rt.sessions() as session:
        party = await session.scalar(select(Party).where(Party.id == party_id, visible_parties(principal)))
        if party is None or not may_see_statement(principal, party):
            return None
        network = await session.get(Network, party.network_id)
        key = periods.resolve(network, period, rt.now(), "period")
        code = validate.currency(currency or network.currency, "currency")
        if await periods.is_closed(session, network.id, key):
            return await _final(session, principal, party, key, code)
        stmt = select(Service).where(Service.network_id == network.id, Service.currency == code).order_by(Service.id)
        if _sees_only_part_of(principal, party):
            stmt = stmt.where(consumer_data_services(principal))
        services = list(await session.scalars(stmt))
        ids = [s.id for s in services]
        consumer = party.id if party.kind == "CONSUMER" else None
        if consumer is None:
            entries = await _consumers_together(session, network, services, key)
        else:
            entries = await period_entries(session, network, services, key, consumer)
        entries += await booked_entries(session, network.id, LedgerEntry.booked_period == key, LedgerEntry.service_id.in_(ids))
        charges = await _invoice_lines(session, network.id, party.id, key, ids) if consumer else []
    return Statement(party, key, code, "DRAFT", None, statement_lines(party.id, entries), charges)


async def _invoice_lines(session, network_id: int, consumer_id: int, period: str, service_ids: list[int]) -> list[InvoiceLine]:
    rows = await session.scalars(
        select(UsageLine)
        .where(
            UsageLine.network_id == network_id,
            UsageLine.period == period,
            UsageLine.consumer_id == consumer_id,
            UsageLine.service_id.in_(service_ids),
            UsageLine.events > 0,
        )
        .order_by(UsageLine.service_id, UsageLine.metric)
    )
    return [InvoiceLine(r.service_id, r.metric, from_micros(r.quantity).normalize(), r.events, r.amount) for r in rows]


async def _final(session: AsyncSession, principal: Principal, party: Party, period: str, currency: str) -> Statement:
    row = await session.scalar(
        select(FinalStatement).where(
            FinalStatement.network_id == party.network_id,
            FinalStatement.party_id == party.id,
            FinalStatement.period == period,
            FinalStatement.currency == currency,
        )
    )
    if row is None:  # nothing moved for this party: its final statement is empty
        return Statement(party, period, currency, "FINAL", None, [], [])
    return (await final_statements(session, principal, [row], {party.id: party}))[0]


def _sees_only_part_of(principal: Principal, party: Party) -> bool:
    """A consumer's invoice seen by a provider or merchant of record: only the services whose
    consumer data that caller may see count, lines, charges and totals alike."""
    return party.kind == "CONSUMER" and not principal.is_owner and principal.party_id != party.id


async def _consumer_data_service_ids(session: AsyncSession, principal: Principal) -> set[int]:
    return set(await session.scalars(select(Service.id).where(consumer_data_services(principal))))


async def final_statements(
    session: AsyncSession, principal: Principal, rows: list[FinalStatement], parties: dict[int, Party]
) -> list[Statement]:
    """Final statements with their lines and charges, two statements for any number of them, each
    as much of it as the caller may see."""
    ids = [r.id for r in rows]
    lines: dict[int, list[StatementLine]] = defaultdict(list)
    for line in await session.scalars(select(FinalStatementLine).where(FinalStatementLine.statement_id.in_(ids)).order_by(FinalStatementLine.id)):
        lines[line.statement_id].append(
            StatementLine(line.counterparty_id, line.service_id, Direction(line.direction), line.amount, line.adjustment, line.origin_period)
        )
    charges: dict[int, list[InvoiceLine]] = defaultdict(list)
    for charge in await session.scalars(select(FinalStatementCharge).where(FinalStatementCharge.statement_id.in_(ids)).order_by(FinalStatementCharge.id)):
        charges[charge.statement_id].append(
            InvoiceLine(charge.service_id, charge.metric, from_micros(charge.quantity).normalize(), charge.events, charge.amount)
        )
    allowed = None
    if any(_sees_only_part_of(principal, parties[r.party_id]) for r in rows):
        allowed = await _consumer_data_service_ids(session, principal)
    statements = []
    for r in rows:
        own_lines, own_charges = lines[r.id], charges[r.id]
        if allowed is not None and _sees_only_part_of(principal, parties[r.party_id]):
            own_lines = [line for line in own_lines if line.service in allowed]
            own_charges = [charge for charge in own_charges if charge.service_id in allowed]
        statements.append(Statement(parties[r.party_id], r.period, r.currency, "FINAL", r.number, own_lines, own_charges))
    return statements


@dataclass(frozen=True)
class NetworkTotals:
    """Every party's totals in a network's open period and one currency, from one pass over the
    period's flows: what `statement()` gives each party but a consumer (consumers are taken
    together here; a consumer's own totals need its statement). No access applies: the caller
    keeps to each principal what it may see (a party its own totals, the owner any party's)."""

    network_id: int
    period: str
    currency: str
    totals: dict[int, Totals]
    "By party; a party absent moved nothing (zero totals)."
    parties: dict[int, Party]
    "The rows of the parties asked for that belong to the network."

    def of(self, party_id: int) -> Totals:
        return self.totals.get(party_id) or Totals(0, 0)


async def network_totals(rt: Runtime, network_id: int, parties: Iterable[int] = (), currency: str | None = None) -> NetworkTotals | None:
    """The draft totals of every party of the network's current period (`statement(...)` with no
    period for all of them at once: one waterfall per service and the booked corrections, each
    party's lines summed by `statement_lines` over its own entries), with the rows of `parties`.
    None when the network is unknown or the current period is closed already (final statements)."""
    wanted = set(parties)
    async with rt.sessions() as session:
        network = await session.get(Network, network_id)
        if network is None:
            return None
        key = periods.resolve(network, None, rt.now(), "period")
        code = validate.currency(currency or network.currency, "currency")
        if await periods.is_closed(session, network.id, key):
            return None
        services = list(await session.scalars(select(Service).where(Service.network_id == network.id, Service.currency == code).order_by(Service.id)))
        ids = [s.id for s in services]
        entries = await _consumers_together(session, network, services, key)
        entries += await booked_entries(session, network.id, LedgerEntry.booked_period == key, LedgerEntry.service_id.in_(ids))
        rows = {}
        if wanted:
            rows = {p.id: p for p in await session.scalars(select(Party).where(Party.network_id == network.id, Party.id.in_(wanted)))}
    of_party: dict[int, list[Entry]] = defaultdict(list)
    for entry in entries:
        of_party[entry.payer].append(entry)
        if entry.payee != entry.payer:
            of_party[entry.payee].append(entry)
    sums = {party: totals(statement_lines(party, own)) for party, own in of_party.items() if party is not None}
    return NetworkTotals(network.id, key, code, sums, rows)

"""Statements: a party's settlement for one period and currency. While the period is open the
statement is a draft, computed live from the running totals."""

from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select

from app.auth import Principal
from app.billing.money import from_micros
from app.billing.settlement import Direction, StatementLine, Totals, party_lines, totals
from app.runtime import Runtime
from app.services import periods, validate
from app.services.access import visible_parties
from app.services.flows import service_splits
from models import Network, Party, Service, UsageLine


@dataclass(frozen=True)
class InvoiceLine:
    """A consumer's charge line for one service and metric."""

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
    "DRAFT while the period is open."
    number: str | None
    lines: list[StatementLine]
    charges: list[InvoiceLine]
    "A consumer's invoice lines; empty for other parties."

    @property
    def totals(self) -> Totals:
        return totals(self.lines)


def may_see_statement(principal: Principal, party: Party) -> bool:
    """The owner sees every statement, a party its own; a consumer's invoice is consumer data,
    for whoever may see that consumer (its merchant of record, the provider of its services)."""
    if principal.network_id != party.network_id:
        return False
    return principal.is_owner or principal.party_id == party.id or party.kind == "CONSUMER"


async def draft_statement(
    rt: Runtime, principal: Principal, party_id: int, period: str | None, currency: str | None
) -> Statement | None:
    """The live statement of a party; None for a party the caller may not see. Raises DomainError
    INVALID_PERIOD or INVALID_CURRENCY for bad arguments."""
    async with rt.sessions() as session:
        party = await session.scalar(select(Party).where(Party.id == party_id, visible_parties(principal)))
        if party is None or not may_see_statement(principal, party):
            return None
        network = await session.get(Network, party.network_id)
        key = periods.resolve(network, period, rt.now(), "period")
        code = validate.currency(currency or network.currency, "currency")
        services = list(
            await session.scalars(
                select(Service).where(Service.network_id == network.id, Service.currency == code).order_by(Service.id)
            )
        )
        if party.kind == "CONSUMER":
            charges = await _invoice_lines(session, network.id, party.id, key, [s.id for s in services])
            by_service: dict[int, int] = defaultdict(int)
            for line in charges:
                by_service[line.service_id] += line.amount
            merchants = {s.id: s.billed_by_id for s in services}
            lines = [StatementLine(merchants[sid], sid, Direction.OUT, amount) for sid, amount in by_service.items()]
            return Statement(party, key, code, "DRAFT", None, lines, charges)
        lines = []
        for entry in await service_splits(session, network, services, key):
            lines += party_lines(party.id, entry.service.id, entry.service.billed_by_id, entry.revenue, entry.split)
    return Statement(party, key, code, "DRAFT", None, lines, [])


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

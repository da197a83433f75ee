"""Statements in the API: live drafts while a period is open, final once it is closed."""

from __future__ import annotations

from enum import Enum

import strawberry

from app.billing.settlement import Direction
from sqlalchemy import or_, select

from app.services import periods, settlement
from app.services.access import visible_parties
from graph.context import Info
from graph.ids import decode_id, decode_optional, to_global_id
from graph.pagination import encode_cursor, paginate
from graph.types import Money, Node, PageInfo, Party, Service
from models import FinalStatement
from models import Party as PartyRow
from graph.values import ChargeLine


@strawberry.enum
class StatementStatus(Enum):
    DRAFT = "DRAFT"
    FINAL = "FINAL"


FlowDirection = strawberry.enum(Direction, name="FlowDirection")


@strawberry.type
class StatementLine:
    counterparty_id: strawberry.Private[int | None]
    service_id: strawberry.Private[int]
    direction: FlowDirection
    amount: Money
    adjustment: bool
    origin_period: str | None

    @strawberry.field(description="Null for the consumers of the service taken together.")
    async def counterparty(self, info: Info) -> Party | None:
        if self.counterparty_id is None:
            return None
        return Party(row=await info.context.loaders.party_by_id.load(self.counterparty_id))

    @strawberry.field
    async def service(self, info: Info) -> Service:
        return Service(row=await info.context.loaders.service_by_id.load(self.service_id))


@strawberry.type
class Statement(Node):
    value: strawberry.Private[settlement.Statement]

    @strawberry.field
    def id(self) -> strawberry.ID:
        """Made of (party, period, currency): the same id answers the draft, then the final statement."""
        v = self.value
        return strawberry.ID(to_global_id("Statement", f"{v.party.id}:{v.period}:{v.currency}"))

    @strawberry.field(description="Gapless per network once final, e.g. ST-2026-11-000001; null while draft.")
    def number(self) -> str | None:
        return self.value.number

    @strawberry.field
    def party(self) -> Party:
        return Party(row=self.value.party)

    @strawberry.field
    def period(self) -> str:
        return self.value.period

    @strawberry.field
    def status(self) -> StatementStatus:
        return StatementStatus(self.value.status)

    @strawberry.field
    def currency(self) -> str:
        return self.value.currency

    @strawberry.field
    def receivable(self) -> Money:
        return Money.of(self.value.totals.receivable, self.value.currency)

    @strawberry.field
    def payable(self) -> Money:
        return Money.of(self.value.totals.payable, self.value.currency)

    @strawberry.field
    def net(self) -> Money:
        return Money.of(self.value.totals.net, self.value.currency)

    @strawberry.field
    def lines(self) -> list[StatementLine]:
        currency = self.value.currency
        return [
            StatementLine(
                counterparty_id=line.counterparty,
                service_id=line.service,
                direction=line.direction,
                amount=Money.of(line.amount, currency),
                adjustment=line.adjustment,
                origin_period=line.origin_period,
            )
            for line in self.value.lines
        ]

    @strawberry.field(description="A consumer's invoice: its charge lines; empty for other parties.")
    def charges(self) -> list[ChargeLine]:
        currency = self.value.currency
        return [
            ChargeLine(metric=c.metric, quantity=c.quantity, events=c.events, amount=Money.of(c.amount, currency))
            for c in self.value.charges
        ]


@strawberry.type
class StatementEdge:
    cursor: str
    node: Statement


@strawberry.type
class StatementConnection:
    edges: list[StatementEdge]
    page_info: PageInfo


@strawberry.type
class StatementQuery:
    @strawberry.field
    async def statement(
        self, info: Info, party_id: strawberry.ID, period: str, currency: str | None = None
    ) -> Statement | None:
        principal = info.context.party_principal()
        value = await settlement.statement(
            info.context.rt, principal, decode_id(party_id, "Party", "partyId"), period, currency
        )
        return None if value is None else Statement(value=value)

    @strawberry.field
    async def statements(
        self, info: Info, period: str, party_id: strawberry.ID | None = None, first: int | None = None, after: str | None = None
    ) -> StatementConnection:
        """The final statements of a closed period, in number order; an open period has none yet."""
        principal = info.context.party_principal()
        stmt = select(FinalStatement).where(
            FinalStatement.network_id == principal.network_id,
            FinalStatement.period == periods.parse_key(period, "period"),
        )
        if not principal.is_owner:
            consumers = select(PartyRow.id).where(visible_parties(principal), PartyRow.kind == "CONSUMER")
            stmt = stmt.where(or_(FinalStatement.party_id == principal.party_id, FinalStatement.party_id.in_(consumers)))
        party = decode_optional(party_id, "Party", "partyId")
        if party is not None:
            stmt = stmt.where(FinalStatement.party_id == party)
        rt = info.context.rt
        async with rt.sessions() as session:
            page = await paginate(session, rt, stmt, FinalStatement.id, first, after)
            parties = {p.id: p for p in await session.scalars(select(PartyRow).where(PartyRow.id.in_({r.party_id for r in page.rows})))}
            values = await settlement.final_statements(session, principal, page.rows, parties)
        return StatementConnection(
            edges=[StatementEdge(cursor=encode_cursor(row.id), node=Statement(value=value)) for row, value in zip(page.rows, values)],
            page_info=PageInfo.of(page),
        )

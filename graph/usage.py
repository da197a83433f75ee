"""Usage in the API: the UsageEvent type, its connection, and the queries over usage and flows."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import strawberry

from app.billing.money import from_micros
from app.services import settlement, usage_events
from graph.context import Info
from graph.ids import decode_optional, to_global_id
from graph.pagination import Page, decode_cursor, encode_cursor, page_size
from graph.types import Money, Node, PageInfo, Party, Service
from graph.values import RevenueFlow
from models import UsageEvent as UsageEventRow


@strawberry.type
class UsageEvent(Node):
    row: strawberry.Private[UsageEventRow]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(to_global_id("UsageEvent", self.row.id))

    @strawberry.field
    def idempotency_key(self) -> str:
        return self.row.idempotency_key

    @strawberry.field
    async def service(self, info: Info) -> Service:
        return Service(row=await info.context.loaders.service_by_id.load(self.row.service_id))

    @strawberry.field
    async def consumer(self, info: Info) -> Party:
        return Party(row=await info.context.loaders.party_by_id.load(self.row.consumer_id))

    @strawberry.field
    def metric(self) -> str:
        return self.row.metric

    @strawberry.field
    def quantity(self) -> Decimal:
        return from_micros(self.row.quantity).normalize()

    @strawberry.field
    def occurred_at(self) -> datetime:
        return self.row.occurred_at

    @strawberry.field
    def recorded_at(self) -> datetime:
        return self.row.recorded_at

    @strawberry.field
    def voided(self) -> bool:
        return self.row.voided_at is not None

    @strawberry.field
    def voided_at(self) -> datetime | None:
        return self.row.voided_at


@strawberry.type
class UsageEventEdge:
    cursor: str
    node: UsageEvent


@strawberry.type
class UsageEventConnection:
    edges: list[UsageEventEdge]
    page_info: PageInfo


@strawberry.type
class UsageQuery:
    @strawberry.field
    async def revenue_flows(
        self, info: Info, period: str, service_id: strawberry.ID | None = None, party_id: strawberry.ID | None = None
    ) -> list[RevenueFlow]:
        principal = info.context.party_principal()
        found = await settlement.revenue_flows(
            info.context.rt,
            principal,
            period,
            decode_optional(service_id, "Service", "serviceId"),
            decode_optional(party_id, "Party", "partyId"),
        )
        return [
            RevenueFlow(
                payer_id=f.payer_id,
                payee_id=f.payee_id,
                service_id=f.service_id,
                period=f.period,
                amount=Money.of(f.amount, f.currency),
                adjustment=f.adjustment,
                origin_period=f.origin_period,
            )
            for f in found
        ]

    @strawberry.field
    async def usage_events(
        self,
        info: Info,
        service_id: strawberry.ID | None = None,
        consumer_id: strawberry.ID | None = None,
        period: str | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> UsageEventConnection:
        """Consumer-level data: for the owner, and the provider and billing party of each service."""
        principal = info.context.party_principal()
        service = decode_optional(service_id, "Service", "serviceId")
        consumer = decode_optional(consumer_id, "Party", "consumerId")
        size, after_id = page_size(info.context.rt, first), decode_cursor(after) if after is not None else None
        async with info.context.rt.sessions() as session:
            rows, more = await usage_events.events_page(session, principal, service, consumer, period, size, after_id)
        page = Page(rows, more, after is not None)
        return UsageEventConnection(
            edges=[UsageEventEdge(cursor=encode_cursor(row.id), node=UsageEvent(row=row)) for row in page.rows],
            page_info=PageInfo.of(page),
        )



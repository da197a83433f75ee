"""The object types of the contract. Each wraps a row and resolves its links through loaders."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import Enum

import strawberry
from sqlalchemy import select

from app.billing.money import currency_exponent, minor_to_decimal
from app.billing.periods import period_bounds
from app.billing.pricing import Charge as ChargeValue
from app.billing.pricing import ChargeModel
from app.billing.waterfall import ShareBase, ShareKind
from app.services import catalog, periods
from app.services.access import sees_created_at_of, sees_keys_of, sees_rule, visible_parties, visible_services
from graph.context import Info
from graph.ids import to_global_id
from graph.pagination import Page, encode_cursor, paginate
from models import Agreement as AgreementRow
from models import ApiKey as ApiKeyRow
from models import ClosedPeriod
from models import Network as NetworkRow
from models import Party as PartyRow
from models import Service as ServiceRow

strawberry.enum(ChargeModel)
strawberry.enum(ShareKind)
strawberry.enum(ShareBase)


@strawberry.enum
class PartyKind(Enum):
    OWNER = "OWNER"
    PROVIDER = "PROVIDER"
    PARTNER = "PARTNER"
    CONSUMER = "CONSUMER"


@strawberry.enum
class RoundingMode(Enum):
    HALF_UP = "HALF_UP"
    HALF_EVEN = "HALF_EVEN"


@strawberry.enum
class PeriodStatus(Enum):
    OPEN = "OPEN"
    CLOSED = "CLOSED"


@strawberry.interface
class Node:
    id: strawberry.ID


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None

    @classmethod
    def of(cls, page: Page) -> PageInfo:
        return cls(
            has_next_page=page.has_next,
            has_previous_page=page.has_previous,
            start_cursor=encode_cursor(page.rows[0].id) if page.rows else None,
            end_cursor=encode_cursor(page.rows[-1].id) if page.rows else None,
        )


@strawberry.type
class Money:
    amount: Decimal
    currency: str

    @classmethod
    def of(cls, minor: int, currency: str) -> Money:
        """Minor units shown with exactly the currency's decimals ("9.70", "1200", "1.234")."""
        return cls(amount=minor_to_decimal(minor, currency_exponent(currency)), currency=currency)


@strawberry.type
class Tier:
    up_to: Decimal | None
    unit_price: Decimal
    flat_fee: Decimal


@strawberry.type
class Charge:
    metric: str
    model: ChargeModel
    unit_price: Decimal | None = None
    tiers: list[Tier] | None = None
    package_size: Decimal | None = None
    package_price: Decimal | None = None
    free_units: Decimal | None = None
    rate_percent: Decimal | None = None
    fixed_fee: Decimal | None = None
    min_per_event: Decimal | None = None
    max_per_event: Decimal | None = None

    @classmethod
    def of(cls, charge: ChargeValue) -> Charge:
        return cls(
            metric=charge.metric,
            model=charge.model,
            unit_price=charge.unit_price,
            tiers=[Tier(up_to=t.up_to, unit_price=t.unit_price, flat_fee=t.flat_fee) for t in charge.tiers] or None,
            package_size=charge.package_size,
            package_price=charge.package_price,
            free_units=charge.free_units,
            rate_percent=charge.rate_percent,
            fixed_fee=charge.fixed_fee,
            min_per_event=charge.min_per_event,
            max_per_event=charge.max_per_event,
        )


@strawberry.type
class SettlementPeriod:
    key: str
    starts_at: datetime
    ends_at: datetime
    status: PeriodStatus

    @classmethod
    def of(cls, key: str, time_zone: str, closed: bool) -> SettlementPeriod:
        starts_at, ends_at = period_bounds(key, time_zone)
        return cls(
            key=key, starts_at=starts_at, ends_at=ends_at, status=PeriodStatus.CLOSED if closed else PeriodStatus.OPEN
        )


@strawberry.type
class ApiKey(Node):
    row: strawberry.Private[ApiKeyRow]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(to_global_id("ApiKey", self.row.id))

    @strawberry.field
    async def party(self, info: Info) -> Party:
        return Party(row=await info.context.loaders.party_by_id.load(self.row.party_id))

    @strawberry.field(description="The first characters of the key, enough to recognise it.")
    def prefix(self) -> str:
        return f"sf_{self.row.prefix}"

    @strawberry.field
    def created_at(self) -> datetime:
        return self.row.created_at

    @strawberry.field
    def revoked_at(self) -> datetime | None:
        return self.row.revoked_at


@strawberry.type
class Party(Node):
    row: strawberry.Private[PartyRow]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(to_global_id("Party", self.row.id))

    @strawberry.field
    def kind(self) -> PartyKind:
        return PartyKind(self.row.kind)

    @strawberry.field
    def name(self) -> str:
        return self.row.name

    @strawberry.field
    def external_ref(self) -> str | None:
        return self.row.external_ref

    @strawberry.field
    def active(self) -> bool:
        return self.row.active

    @strawberry.field(description="A consumer seen by a provider of its services (not its merchant of record): "
                      "when its first event on that provider's services was recorded.")
    async def created_at(self, info: Info) -> datetime:
        if sees_created_at_of(info.context.principal, self.row):
            return self.row.created_at
        return await info.context.loaders.consumer_first_recorded.load(self.row.id)

    @strawberry.field(description="Agreements where this party pays or is paid.")
    async def agreements(self, info: Info) -> list[Agreement]:
        rows = await info.context.loaders.agreements_by_party.load(self.row.id)
        return [Agreement(row=row) for row in rows]

    @strawberry.field(description="Visible to the owner and to the party itself.")
    async def api_keys(self, info: Info) -> list[ApiKey]:
        if not sees_keys_of(info.context.party_principal(), self.row):
            return []
        return [ApiKey(row=row) for row in await info.context.loaders.api_keys_by_party.load(self.row.id)]


@strawberry.type
class PartyEdge:
    cursor: str
    node: Party


@strawberry.type
class PartyConnection:
    edges: list[PartyEdge]
    page_info: PageInfo


@strawberry.type
class ServiceEdge:
    cursor: str
    node: Service


@strawberry.type
class ServiceConnection:
    edges: list[ServiceEdge]
    page_info: PageInfo


@strawberry.type
class ShareRule:
    kind: ShareKind
    percent: Decimal | None
    amount: Decimal | None
    metric: str | None
    base: ShareBase | None = strawberry.field(description="For PERCENT rules (GROSS when not given).")
    weight: Decimal | None
    priority: int
    min: Decimal | None
    max: Decimal | None


@strawberry.type
class Agreement(Node):
    row: strawberry.Private[AgreementRow]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(to_global_id("Agreement", self.row.id))

    @strawberry.field
    async def payer(self, info: Info) -> Party:
        return Party(row=await info.context.loaders.party_by_id.load(self.row.payer_id))

    @strawberry.field
    async def payee(self, info: Info) -> Party:
        return Party(row=await info.context.loaders.party_by_id.load(self.row.payee_id))

    @strawberry.field
    async def service(self, info: Info) -> Service:
        return Service(row=await info.context.loaders.service_by_id.load(self.row.service_id))

    @strawberry.field(description="Null unless the caller is the owner, the payer or the payee.")
    def rule(self, info: Info) -> ShareRule | None:
        row = self.row
        if not sees_rule(info.context.party_principal(), row):
            return None
        return ShareRule(
            kind=ShareKind(row.kind),
            percent=row.percent,
            amount=row.amount,
            metric=row.metric,
            base=ShareBase(row.base) if row.base else None,
            weight=row.weight,
            priority=row.priority,
            min=row.min,
            max=row.max,
        )

    @strawberry.field(description='First period in force, e.g. "2026-11".')
    def effective_from(self) -> str:
        return self.row.effective_from

    @strawberry.field(description="First period no longer in force; null while open-ended.")
    def effective_to(self) -> str | None:
        return self.row.effective_to

    @strawberry.field
    def created_at(self) -> datetime:
        return self.row.created_at


@strawberry.type(description="The graph of one service: who takes part and the agreements between them.")
class ValueChain:
    service: Service
    period: strawberry.Private[str]

    @strawberry.field
    async def agreements(self, info: Info) -> list[Agreement]:
        return [Agreement(row=row) for row in await _chain_agreements(info, self.service.row, self.period)]

    @strawberry.field
    async def parties(self, info: Info) -> list[Party]:
        """The billing party, the provider and everyone the visible agreements in force connect."""
        service = self.service.row
        ids = [service.billed_by_id, service.provider_id]
        for row in await _chain_agreements(info, service, self.period):
            ids += [row.payer_id, row.payee_id]
        unique = list(dict.fromkeys(ids))
        rows = await info.context.loaders.party_by_id.load_many(unique)
        return [Party(row=row) for row in rows if row is not None]


async def _chain_agreements(info: Info, service: ServiceRow, period: str) -> list[AgreementRow]:
    return await info.context.loaders.chain_agreements.load((service.id, period))


@strawberry.type
class Service(Node):
    row: strawberry.Private[ServiceRow]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(to_global_id("Service", self.row.id))

    @strawberry.field
    def name(self) -> str:
        return self.row.name

    @strawberry.field
    def currency(self) -> str:
        return self.row.currency

    @strawberry.field
    async def provider(self, info: Info) -> Party:
        return Party(row=await info.context.loaders.party_by_id.load(self.row.provider_id))

    @strawberry.field(description="The merchant of record toward consumers: the owner, or a reselling partner (B2B2C).")
    async def billed_by(self, info: Info) -> Party:
        return Party(row=await info.context.loaders.party_by_id.load(self.row.billed_by_id))

    @strawberry.field(description="The price plan in force in the period (the current one when left out).")
    async def charges(self, info: Info, period: str | None = None) -> list[Charge]:
        plan = await info.context.loaders.plan_by_service_period.load((self.row.id, await self._period(info, period)))
        return [Charge.of(c) for c in catalog.charges_of(plan)]

    @strawberry.field(description="What consumers paid for this service in the period, taken together.")
    async def revenue(self, info: Info, period: str | None = None) -> Money | None:
        key = (self.row.id, await self._period(info, period))
        amount = await info.context.loaders.revenue_by_service_period.load(key)
        return None if amount is None else Money.of(amount, self.row.currency)

    async def _period(self, info: Info, period: str | None) -> str:
        """The period the caller named, or the current one in the network's time zone."""
        network = await info.context.loaders.network_by_id.load(self.row.network_id)
        return periods.resolve(network, period, info.context.rt.now(), "period")

    @strawberry.field
    async def value_chain(self, info: Info, period: str | None = None) -> ValueChain:
        return ValueChain(service=self, period=await self._period(info, period))


@strawberry.type
class Network(Node):
    row: strawberry.Private[NetworkRow]

    @strawberry.field
    def id(self) -> strawberry.ID:
        return strawberry.ID(to_global_id("Network", self.row.id))

    @strawberry.field
    def name(self) -> str:
        return self.row.name

    @strawberry.field
    def currency(self) -> str:
        return self.row.currency

    @strawberry.field
    def rounding_mode(self) -> RoundingMode:
        return RoundingMode(self.row.rounding_mode)

    @strawberry.field(description='IANA time zone of the settlement periods, e.g. "Europe/Berlin".')
    def time_zone(self) -> str:
        return self.row.time_zone

    @strawberry.field
    async def owner(self, info: Info) -> Party:
        async with info.context.rt.sessions() as session:
            row = await session.scalar(
                select(PartyRow).where(PartyRow.network_id == self.row.id, PartyRow.kind == "OWNER")
            )
        return Party(row=row)

    @strawberry.field
    async def parties(
        self, info: Info, kind: PartyKind | None = None, first: int | None = None, after: str | None = None
    ) -> PartyConnection:
        stmt = select(PartyRow).where(visible_parties(info.context.party_principal()))
        if kind is not None:
            stmt = stmt.where(PartyRow.kind == kind.value)
        async with info.context.rt.sessions() as session:
            page = await paginate(session, info.context.rt, stmt, PartyRow.id, first, after)
        return PartyConnection(
            edges=[PartyEdge(cursor=encode_cursor(row.id), node=Party(row=row)) for row in page.rows],
            page_info=PageInfo.of(page),
        )

    @strawberry.field
    async def services(self, info: Info, first: int | None = None, after: str | None = None) -> ServiceConnection:
        stmt = select(ServiceRow).where(visible_services(info.context.party_principal()))
        async with info.context.rt.sessions() as session:
            page = await paginate(session, info.context.rt, stmt, ServiceRow.id, first, after)
        return ServiceConnection(
            edges=[ServiceEdge(cursor=encode_cursor(row.id), node=Service(row=row)) for row in page.rows],
            page_info=PageInfo.of(page),
        )

    @strawberry.field
    async def periods(self, info: Info) -> list[SettlementPeriod]:
        """From the first period to the current one, oldest first."""
        network = self.row
        async with info.context.rt.sessions() as session:
            closed = set(
                await session.scalars(select(ClosedPeriod.key).where(ClosedPeriod.network_id == network.id))
            )
        keys = periods.span(network.first_period, periods.current_period(network, info.context.rt.now()))
        return [SettlementPeriod.of(key, network.time_zone, key in closed) for key in keys]


@strawberry.type
class Principal:
    party: Party
    network: Network

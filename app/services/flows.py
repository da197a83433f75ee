"""Live revenue flows of a period, from the running totals: the waterfall per service, never a
rescan of the events."""

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import Principal
from app.billing.money import RoundingMode, currency_exponent, from_micros
from app.billing.waterfall import MetricUsage, Split, split_service
from app.errors import not_found
from app.runtime import Runtime
from app.services import periods
from app.services.access import consumer_data_services, visible_services
from app.services.agreements import in_force, leg_of
from models import Agreement, Network, Service, ServiceRevenue, ServiceUsage


@dataclass(frozen=True)
class Flow:
    payer_id: int
    payee_id: int
    service_id: int
    period: str
    amount: int
    "Minor units of `currency`."
    currency: str


@dataclass(frozen=True)
class ServiceSplit:
    service: Service
    revenue: int
    split: Split


async def service_splits(session: AsyncSession, network: Network, services: list[Service], period: str) -> list[ServiceSplit]:
    """The waterfall of each service with usage in the period, from the running totals."""
    ids = [s.id for s in services]
    revenue = dict(
        (
            await session.execute(
                select(ServiceRevenue.service_id, ServiceRevenue.amount).where(
                    ServiceRevenue.network_id == network.id, ServiceRevenue.period == period, ServiceRevenue.service_id.in_(ids)
                )
            )
        ).all()
    )
    usage: dict[int, dict[str, MetricUsage]] = {}
    for row in await session.scalars(
        select(ServiceUsage).where(
            ServiceUsage.network_id == network.id, ServiceUsage.period == period, ServiceUsage.service_id.in_(ids)
        )
    ):
        usage.setdefault(row.service_id, {})[row.metric] = MetricUsage(from_micros(row.quantity), row.events)
    legs: dict[int, list] = {}
    for agreement in await session.scalars(
        select(Agreement)
        .where(Agreement.network_id == network.id, Agreement.service_id.in_(ids), in_force(period))
        .order_by(Agreement.id)
    ):
        legs.setdefault(agreement.service_id, []).append(leg_of(agreement))
    mode = RoundingMode(network.rounding_mode)
    splits = []
    for service in services:
        split = split_service(
            service.billed_by_id,
            revenue.get(service.id, 0),
            legs.get(service.id, []),
            usage.get(service.id, {}),
            currency_exponent(service.currency),
            mode,
        )
        splits.append(ServiceSplit(service, revenue.get(service.id, 0), split))
    return splits


async def revenue_flows(
    rt: Runtime, principal: Principal, period: str, service_id: int | None = None, party_id: int | None = None
) -> list[Flow]:
    """Flows between parties in a period; a party other than the owner sees only the flows it pays
    or receives."""
    async with rt.sessions() as session:
        network = await session.get(Network, principal.network_id)
        key = periods.parse_key(period, "period")
        stmt = select(Service).where(visible_services(principal)).order_by(Service.id)
        if service_id is not None:
            stmt = stmt.where(Service.id == service_id)
        services = list(await session.scalars(stmt))
        if service_id is not None and not services:
            raise not_found("service", "serviceId")
        splits = await service_splits(session, network, services, key)
    me = principal.party_id
    flows = []
    for entry in splits:
        for (payer, payee), amount in entry.split.flows.items():
            if not principal.is_owner and me not in (payer, payee):
                continue
            if party_id is not None and party_id not in (payer, payee):
                continue
            flows.append(Flow(payer, payee, entry.service.id, key, amount, entry.service.currency))
    return flows


async def service_revenues(
    session: AsyncSession, principal: Principal, network_id: int, service_ids: list[int], period: str
) -> dict[int, int]:
    """What consumers paid for each service in the period (minor units), only for the services
    whose consumer data the principal may see; the others are absent."""
    rows = await session.execute(
        select(Service.id, ServiceRevenue.amount)
        .outerjoin(
            ServiceRevenue,
            (ServiceRevenue.network_id == Service.network_id)
            & (ServiceRevenue.service_id == Service.id)
            & (ServiceRevenue.period == period),
        )
        .where(Service.network_id == network_id, Service.id.in_(service_ids), consumer_data_services(principal))
    )
    return {service_id: amount or 0 for service_id, amount in rows}

"""A period's waterfall per service from the running totals, never a rescan of the events."""

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import Principal
from app.billing.money import RoundingMode, currency_exponent, from_micros
from app.billing.waterfall import FlowOverflow, MetricUsage, Split, split_service
from app.errors import FlowTooLarge
from app.services.access import consumer_data_services
from app.services.agreements import in_force, leg_of
from models import Agreement, Network, Service, ServiceRevenue, ServiceUsage


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
        try:
            split = split_service(
                service.billed_by_id,
                revenue.get(service.id, 0),
                legs.get(service.id, []),
                usage.get(service.id, {}),
                currency_exponent(service.currency),
                mode,
            )
        except FlowOverflow as overflow:
            raise too_large(overflow, service.id, period, "period") from None
        splits.append(ServiceSplit(service, revenue.get(service.id, 0), split))
    return splits


def too_large(overflow: FlowOverflow, service_id: int, period: str, *path: str) -> FlowTooLarge:
    """A waterfall beyond FLOW_LIMIT as the caller's error, naming what to end: the agreement whose
    leg took it there (its payer or the owner may end it at this period), else the service."""
    if overflow.leg is None:
        return FlowTooLarge(("Service", service_id), f"what consumers pay for the service in {period} exceeds 2^62 minor units", *path)
    message = f"the agreement would move more than 2^62 minor units in {period}; end it at {period} (endAgreement) to settle the rest"
    return FlowTooLarge(("Agreement", overflow.leg), message, *path)


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

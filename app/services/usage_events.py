"""The stored usage events a party may read, by service, consumer and period (usageEvents)."""

from sqlalchemy import Select, select

from app.auth import Principal
from app.services import periods
from app.services.access import consumer_data_services
from models import ConsumerBlock, Service, UsageEvent


def events_query(principal: Principal, service_id: int | None, consumer_id: int | None, period: str | None) -> tuple[Select, tuple]:
    """The events as a statement, and the order of their ids to read them in: by block of ids,
    then id, where a consumer is asked for."""
    of_service = UsageEvent.service_id
    stmt = select(UsageEvent).where(UsageEvent.network_id == principal.network_id)
    order: tuple = (UsageEvent.id,)
    if consumer_id is not None:
        # The consumer's blocks, in order, each searched in the index by consumer: its events
        # without reading anyone else's (models.usage.EVENT_BLOCK).
        blocks = select(ConsumerBlock.id_block).where(ConsumerBlock.network_id == principal.network_id, ConsumerBlock.consumer_id == consumer_id)
        stmt = stmt.where(UsageEvent.consumer_id == consumer_id, UsageEvent.id_block.in_(blocks))
        order = (UsageEvent.id_block, UsageEvent.id)
        # As an expression, the service leaves SQLite no index to read the service's whole period
        # by and sort, the plan it chose over the consumer's blocks.
        of_service = UsageEvent.service_id + 0
    stmt = stmt.where(of_service.in_(select(Service.id).where(consumer_data_services(principal))))
    if service_id is not None:
        stmt = stmt.where(of_service == service_id)
    if period is not None:
        stmt = stmt.where(UsageEvent.period == periods.parse_key(period, "period"))
    return stmt, order

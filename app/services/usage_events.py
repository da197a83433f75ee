"""The stored usage events a party may read, by service, consumer and period (usageEvents)."""

from datetime import datetime

from sqlalchemy import func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import Principal
from app.services import periods
from app.services.access import consumer_data_services
from models import ConsumerBlock, Service, UsageEvent
from models.usage import EVENT_BLOCK

MAX_BLOCKS = 64
"Blocks of ids searched at once for a consumer's page (from one, doubling while the page is not full)."


async def events_page(session: AsyncSession, principal: Principal, service_id: int | None, consumer_id: int | None,
                      period: str | None, size: int, after: int | None) -> tuple[list[UsageEvent], bool]:
    """Up to `size` events with ids above `after`, in the order of their ids, and whether more follow.

    A consumer's events are read block of ids by block (models.usage.EVENT_BLOCK), the blocks it
    has events in (ConsumerBlock) in order, one at first and twice as many each time the page is
    not full yet: a page costs about its own events, however many the consumer has, and the
    database is never left to sort all of them (PostgreSQL's planner chose to)."""
    stmt = select(UsageEvent).where(UsageEvent.network_id == principal.network_id)
    of_service = UsageEvent.service_id
    if consumer_id is not None:
        stmt = stmt.where(UsageEvent.consumer_id == consumer_id)
        # As an expression, the service leaves SQLite no index to read the service's whole period
        # by, the plan it chose over the consumer's blocks.
        of_service = UsageEvent.service_id + 0
    stmt = stmt.where(of_service.in_(select(Service.id).where(consumer_data_services(principal))))
    if service_id is not None:
        stmt = stmt.where(of_service == service_id)
    if period is not None:
        stmt = stmt.where(UsageEvent.period == periods.parse_key(period, "period"))
    if after is not None:
        stmt = stmt.where(UsageEvent.id > after)
    stmt = stmt.order_by(UsageEvent.id)
    if consumer_id is None:
        rows = list(await session.scalars(stmt.limit(size + 1)))
        return rows[:size], len(rows) > size

    rows: list[UsageEvent] = []
    first_block, count = (0 if after is None else after // EVENT_BLOCK), 1
    while len(rows) <= size:
        blocks = list(await session.scalars(
            select(ConsumerBlock.id_block)
            .where(ConsumerBlock.network_id == principal.network_id, ConsumerBlock.consumer_id == consumer_id,
                   ConsumerBlock.id_block >= first_block)
            .order_by(ConsumerBlock.id_block)
            .limit(count)
        ))
        if blocks:
            rows += await session.scalars(stmt.where(UsageEvent.id_block.in_(blocks)).limit(size + 1 - len(rows)))
        if len(blocks) < count:
            break
        first_block, count = blocks[-1] + 1, min(2 * count, MAX_BLOCKS)
    return rows[:size], len(rows) > size


async def first_recorded(session: AsyncSession, principal: Principal, consumer_ids: list[int]) -> dict[int, datetime]:
    """When each consumer's first event on the services whose consumer data the principal sees
    was recorded: a consumer's creation as that principal knows it (access.sees_created_at_of).
    Read through the consumers' blocks of ids (ConsumerBlock), the index by consumer."""
    blocks = select(ConsumerBlock.id_block, ConsumerBlock.consumer_id).where(
        ConsumerBlock.network_id == principal.network_id, ConsumerBlock.consumer_id.in_(consumer_ids)
    )
    rows = await session.execute(
        select(UsageEvent.consumer_id, func.min(UsageEvent.recorded_at))
        .where(
            UsageEvent.network_id == principal.network_id,
            tuple_(UsageEvent.id_block, UsageEvent.consumer_id).in_(blocks),
            UsageEvent.service_id.in_(select(Service.id).where(consumer_data_services(principal))),
        )
        .group_by(UsageEvent.consumer_id)
    )
    return dict(rows.all())

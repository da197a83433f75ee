"""Concurrent recordUsage batches: SQLite records the batches that wait together in one
transaction; each keeps its own outcome."""

import asyncio
from datetime import UTC, datetime
from decimal import Decimal as D

from sqlalchemy import func, select

from app.errors import DomainError
from app.services import usage
from models import ServiceUsage, UsageEvent
from tests.services.test_live_totals import build

BILLION = D(10) ** 9


async def stored_keys(rt, service_id: int) -> set[str]:
    async with rt.sessions() as session:
        return set(await session.scalars(select(UsageEvent.idempotency_key).where(UsageEvent.service_id == service_id)))


async def counted_events(rt, service_id: int) -> int:
    """Events as the service's running totals count them."""
    async with rt.sessions() as session:
        return await session.scalar(select(func.sum(ServiceUsage.events)).where(ServiceUsage.service_id == service_id))


async def test_a_batch_refused_whole_leaves_the_batches_beside_it_recorded(rt):
    network, owner, provider, service = await build(rt)
    now = datetime.now(UTC)

    def items(prefix: str, count: int, quantity: D, consumer: str = "heavy") -> list[usage.UsageItem]:
        return [usage.UsageItem(f"{prefix}-{i}", service.id, consumer, "minutes", quantity, now) for i in range(count)]

    await usage.record_usage(rt, provider, items("a", usage.MAX_BATCH, BILLION))
    # The line of "heavy" holds 5e12 units: 5,000 more would leave the 64-bit range of its total.
    overflowing, beside, after = await asyncio.gather(
        usage.record_usage(rt, provider, items("b", usage.MAX_BATCH, BILLION)),
        usage.record_usage(rt, provider, items("c", 3, D("1.5"), consumer="light")),
        usage.record_usage(rt, owner, items("d", 2, D(2), consumer="light")),
        return_exceptions=True,
    )
    assert isinstance(overflowing, DomainError) and overflowing.code == "QUANTITY_OVERFLOW"
    assert [r.status for r in beside.results] == ["ACCEPTED"] * 3
    assert [r.status for r in after.results] == ["ACCEPTED"] * 2
    keys = await stored_keys(rt, service.id)
    assert not any(key.startswith("b-") for key in keys)
    assert {"c-0", "c-1", "c-2", "d-0", "d-1"} <= keys and len(keys) == usage.MAX_BATCH + 5
    assert await counted_events(rt, service.id) == usage.MAX_BATCH + 5

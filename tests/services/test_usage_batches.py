"""Concurrent recordUsage batches: SQLite records the batches that wait together in one
transaction; each keeps its own outcome."""

import asyncio
import sqlite3
from datetime import UTC, datetime
from decimal import Decimal as D

import pytest
from sqlalchemy import func, select

from app.billing.pricing import Charge, ChargeModel
from app.ingest.items import UsageItem
from app.ingest.record import MAX_BATCH, record_usage
from app.ingest.results import ItemResult
from app.ingest.sql import sql_of
from app.services import catalog
from models import ServiceRevenue, ServiceUsage, UsageEvent
from tests.services.test_live_totals import build

BILLION = D(10) ** 9


async def stored_keys(rt, service_id: int) -> set[str]:
    async with rt.sessions() as session:
        return set(await session.scalars(select(UsageEvent.idempotency_key).where(UsageEvent.service_id == service_id)))


async def counted_events(rt, service_id: int) -> int:
    """Events as the service's running totals count them."""
    async with rt.sessions() as session:
        return await session.scalar(select(func.sum(ServiceUsage.events)).where(ServiceUsage.service_id == service_id))


def overflowing(index: int) -> dict:
    return {"status": "REJECTED", "problems": [(("events", str(index), "quantity"), "QUANTITY_OVERFLOW")]}


def outcome(result: ItemResult) -> dict:
    if result.status != "REJECTED":
        return {"status": result.status}
    return {"status": result.status, "problems": [(tuple(p.path), p.code) for p in result.problems]}


async def test_events_that_would_overflow_a_running_total_are_rejected_alone_and_the_batches_beside_them_recorded(rt):
    network, owner, provider, service = await build(rt)
    now = datetime.now(UTC)

    def items(prefix: str, count: int, quantity: D, consumer: str = "heavy") -> list[UsageItem]:
        return [UsageItem(f"{prefix}-{i}", service.id, consumer, "minutes", quantity, now) for i in range(count)]

    await record_usage(rt, provider, items("a", MAX_BATCH, BILLION))
    # The line of "heavy" holds 5e12 units: 4,223 more fit in the 64-bit range of its total
    # (9,223,372,036,854,775,807 millionths), the 777 after them do not.
    fitting = 9223 - MAX_BATCH
    heavy, beside, after = await asyncio.gather(
        record_usage(rt, provider, items("b", MAX_BATCH, BILLION)),
        record_usage(rt, provider, items("c", 3, D("1.5"), consumer="light")),
        record_usage(rt, owner, items("d", 2, D(2), consumer="light")),
    )
    assert [outcome(r) for r in heavy.results] == (
        [{"status": "ACCEPTED"}] * fitting + [overflowing(i) for i in range(fitting, MAX_BATCH)]
    )
    assert [r.status for r in beside.results] == ["ACCEPTED"] * 3
    assert [r.status for r in after.results] == ["ACCEPTED"] * 2
    keys = await stored_keys(rt, service.id)
    assert {f"b-{i}" for i in range(fitting)} <= keys and f"b-{fitting}" not in keys
    assert {"c-0", "c-1", "c-2", "d-0", "d-1"} <= keys and len(keys) == 9223 + 5
    assert await counted_events(rt, service.id) == 9223 + 5


async def test_an_event_that_would_overflow_the_services_total_is_rejected_though_its_line_has_room(rt):
    network, owner, provider, service = await build(rt)
    now = datetime.now(UTC)
    await record_usage(rt, provider, [UsageItem(f"a-{i}", service.id, f"c{i % 5}", "minutes", BILLION, now) for i in range(5000)])
    # Each consumer's line holds 1e12 units; the service's usage of minutes 5e12 units.
    batch = [UsageItem(f"b-{i}", service.id, "fresh", "minutes", BILLION, now) for i in range(4224)]
    batch.append(UsageItem("small", service.id, "fresh", "minutes", D("0.5"), now))
    recorded = await record_usage(rt, provider, batch)
    assert [outcome(r) for r in recorded.results] == [{"status": "ACCEPTED"}] * 4223 + [overflowing(4223), {"status": "ACCEPTED"}]
    keys = await stored_keys(rt, service.id)
    assert "b-4223" not in keys and "small" in keys and len(keys) == 9224
    async with rt.sessions() as session:
        total = await session.scalar(select(ServiceUsage.quantity).where(ServiceUsage.service_id == service.id, ServiceUsage.metric == "minutes"))
    assert total == 9223 * 10**15 + 500_000 and type(total) is int


async def test_an_event_that_would_overflow_the_services_revenue_is_rejected_and_the_rest_recorded(rt):
    network, owner, provider, service = await build(rt)
    pricey, _ = await catalog.create_service(
        rt, owner, name="Yachts", provider_id=provider.party_id, billed_by_id=None, currency=None,
        charges=[Charge(metric="days", model=ChargeModel.PER_UNIT, unit_price=D("1000000"))],
    )
    now = datetime.now(UTC)
    # 10^9 days at 10^6 EUR: 10^17 cents an event, each on its own line; 92 fit in the revenue's 64 bits.
    batch = [UsageItem(f"y-{i}", pricey.id, f"guest-{i}", "days", BILLION, now) for i in range(94)]
    batch.append(UsageItem("ride", service.id, "guest-0", "minutes", D(3), now))
    recorded = await record_usage(rt, provider, batch)
    assert [outcome(r) for r in recorded.results] == [{"status": "ACCEPTED"}] * 92 + [overflowing(92), overflowing(93), {"status": "ACCEPTED"}]
    assert len(await stored_keys(rt, pricey.id)) == 92 and await stored_keys(rt, service.id) == {"ride"}
    async with rt.sessions() as session:
        revenue = await session.scalar(select(ServiceRevenue.amount).where(ServiceRevenue.service_id == pricey.id))
    assert revenue == 92 * 10**17 and type(revenue) is int


async def test_a_key_the_look_up_missed_is_still_stored_once(rt, monkeypatch):
    """The look-up of a batch's keys is not what keeps a key single: SQLite's batch, which holds
    the write lock and numbers its own events, is refused whole by the unique key; elsewhere the
    unique key skips the row and the item is the duplicate it is."""
    network, owner, provider, service = await build(rt)
    now = datetime.now(UTC)
    first = UsageItem("taken", service.id, "alice", "minutes", D(5), now)
    await record_usage(rt, provider, [first])

    statements = sql_of(rt.engine.dialect)
    monkeypatch.setattr(statements, "keys_taken", statements.keys_taken + " AND 1 = 0")  # the look-up finds no key
    batch = [first, UsageItem("free", service.id, "bob", "minutes", D(7), now)]
    if rt.engine.dialect.name == "sqlite":
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
            await record_usage(rt, provider, batch)
        assert await stored_keys(rt, service.id) == {"taken"}
        assert await counted_events(rt, service.id) == 1
    else:
        recorded = await record_usage(rt, provider, batch)
        assert [r.status for r in recorded.results] == ["DUPLICATE", "ACCEPTED"]
        assert await stored_keys(rt, service.id) == {"taken", "free"}
        assert await counted_events(rt, service.id) == 2


async def test_a_batch_that_fails_whole_fails_alone_and_the_batch_beside_it_commits(rt, monkeypatch):
    """SQLite records waiting batches in one transaction, each in its own savepoint: an error that
    is not a refusal (here the unique key refusing a key the look-up missed) is the answer of its
    own batch alone, nothing of that batch is written, and the other batch of the transaction
    commits; the connection is clean for the batches after them."""
    network, owner, provider, service = await build(rt)
    now = datetime.now(UTC)
    first = UsageItem("taken", service.id, "alice", "minutes", D(5), now)
    await record_usage(rt, provider, [first])
    statements = sql_of(rt.engine.dialect)
    with monkeypatch.context() as patched:
        patched.setattr(statements, "keys_taken", statements.keys_taken + " AND 1 = 0")  # the look-up finds no key
        beside, failing = await asyncio.gather(
            record_usage(rt, owner, [UsageItem(f"b-{i}", service.id, "dave", "minutes", D(1), now) for i in range(3)]),
            record_usage(rt, provider, [UsageItem("new", service.id, "carol", "minutes", D(2), now), first]),
            return_exceptions=True,
        )
    assert [r.status for r in beside.results] == ["ACCEPTED"] * 3
    if rt.engine.dialect.name == "sqlite":
        assert type(failing) is sqlite3.IntegrityError
        assert await stored_keys(rt, service.id) == {"taken", "b-0", "b-1", "b-2"}
        assert await counted_events(rt, service.id) == 4
    else:  # no shared transaction: the unique key skips the row
        assert [r.status for r in failing.results] == ["ACCEPTED", "DUPLICATE"]
        assert await counted_events(rt, service.id) == 5
    after = await record_usage(rt, provider, [UsageItem("after", service.id, "erin", "minutes", D(4), now), first])
    assert [r.status for r in after.results] == ["ACCEPTED", "DUPLICATE"]
    assert await counted_events(rt, service.id) == (5 if rt.engine.dialect.name == "sqlite" else 6)


async def test_a_batch_numbers_its_events_after_the_highest_in_the_order_of_its_items(rt):
    network, owner, provider, service = await build(rt)
    now = datetime.now(UTC)
    before = await record_usage(rt, provider, [UsageItem("one", service.id, "alice", "minutes", D(1), now)])
    batch = [UsageItem(f"k-{i}", service.id, f"c{i % 7}", "minutes", D(i), now) for i in range(2500)]
    recorded = await record_usage(rt, provider, batch)
    ids = [r.event_id for r in recorded.results]
    assert ids == sorted(set(ids)) and len(ids) == 2500 and ids[0] > before.results[0].event_id
    if rt.engine.dialect.name == "sqlite":  # numbered by the batch itself: right after the highest
        assert ids == list(range(before.results[0].event_id + 1, before.results[0].event_id + 2501))
    async with rt.sessions() as session:
        stored = dict((await session.execute(select(UsageEvent.idempotency_key, UsageEvent.id).where(UsageEvent.service_id == service.id))).all())
    assert [stored[f"k-{i}"] for i in range(2500)] == ids

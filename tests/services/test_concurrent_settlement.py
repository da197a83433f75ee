"""Closes and corrections at once: one close wins, numbers stay gapless, and no correction is
booked into a period while it is being frozen."""

import asyncio
import random
from datetime import UTC, datetime

from sqlalchemy import select

from app.errors import DomainError
from app.ingest.record import record_usage
from app.services import closing
from models import FinalStatement
from tests.services.test_books import NOVEMBER, OCTOBER, postings
from tests.services.test_live_totals import build, random_item


async def test_two_concurrent_closes_issue_one_gapless_set_of_statements(rt):
    rng = random.Random(5)
    rt.clock = lambda: NOVEMBER
    network, owner, provider, service = await build(rt, first_period="2026-10")
    items = [random_item(rng, service.id, f"c-{i}", OCTOBER) for i in range(40)]
    await record_usage(rt, provider, items)
    outcomes = await asyncio.gather(*(closing.close_period(rt, owner, "2026-10") for _ in range(3)), return_exceptions=True)
    wins = [o for o in outcomes if not isinstance(o, Exception)]
    losses = [o for o in outcomes if isinstance(o, Exception)]
    assert len(wins) == 1 and all(isinstance(e, DomainError) and e.code == "PERIOD_CLOSED" for e in losses)
    async with rt.sessions() as session:
        numbers = sorted(await session.scalars(select(FinalStatement.seq).where(FinalStatement.network_id == network.id)))
    assert numbers == list(range(1, wins[0][1] + 1))


async def test_corrections_racing_a_close_land_in_a_period_that_is_still_open(rt):
    rng = random.Random(6)
    rt.clock = lambda: NOVEMBER
    network, owner, provider, service = await build(rt, first_period="2026-10")
    await record_usage(rt, provider, [random_item(rng, service.id, f"o-{i}", OCTOBER) for i in range(20)])
    await closing.close_period(rt, owner, "2026-10")
    await record_usage(rt, provider, [random_item(rng, service.id, f"n-{i}", NOVEMBER) for i in range(20)])
    rt.clock = lambda: datetime(2026, 12, 2, tzinfo=UTC)
    late = [record_usage(rt, provider, [random_item(rng, service.id, f"late-{b}-{i}", OCTOBER) for i in range(5)]) for b in range(6)]
    await asyncio.gather(closing.close_period(rt, owner, "2026-11"), *late)

    balance = await postings(rt, network.id, "2026-11")
    async with rt.sessions() as session:
        finals = list(await session.scalars(select(FinalStatement).where(FinalStatement.network_id == network.id, FinalStatement.period == "2026-11")))
    assert {s.party_id: s.receivable - s.payable for s in finals} == {p: b for p, b in balance.items() if b or p in {s.party_id for s in finals}}
    assert sum(s.receivable - s.payable for s in finals) == 0

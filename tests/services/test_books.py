"""Double-entry books on random data with corrections: every statement equals its party's
postings, every period's statements sum to zero, and corrections converge on the recomputation."""

import random
from collections import defaultdict
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from app.errors import DomainError
from app.ingest.record import record_usage
from app.ingest.void import void_usage
from app.services import closing, settlement
from models import FinalStatement, LedgerEntry, Network, Service
from tests.services.test_live_totals import build, random_item

OCTOBER = datetime(2026, 10, 20, 12, tzinfo=UTC)
NOVEMBER = datetime(2026, 11, 15, 12, tzinfo=UTC)


async def postings(rt, network_id: int, period: str) -> dict[int, int]:
    """Each party's credits less its debits among the entries booked into the period."""
    balance: dict[int, int] = defaultdict(int)
    async with rt.sessions() as session:
        for entry in await session.scalars(select(LedgerEntry).where(LedgerEntry.network_id == network_id, LedgerEntry.booked_period == period)):
            balance[entry.payee_id] += entry.amount
            balance[entry.payer_id] -= entry.amount
    return balance


@pytest.mark.parametrize("seed", [11, 12])
async def test_books_balance_and_corrections_converge(rt, seed):
    rng = random.Random(seed)
    rt.clock = lambda: NOVEMBER
    network, owner, provider, service = await build(rt, first_period="2026-10")

    async def batch(tag: str, when: datetime, count: int) -> list[str]:
        items = [random_item(rng, service.id, f"{seed}-{tag}-{i}", when) for i in range(count)]
        assert (await record_usage(rt, provider, items)).count("ACCEPTED") == count
        return [i.idempotency_key for i in items]

    october_keys = await batch("oct", OCTOBER, 30)
    await closing.close_period(rt, owner, "2026-10")
    late = await batch("late", OCTOBER, 10) + await batch("nov", NOVEMBER, 20)
    for key in rng.sample(october_keys + late, 8):
        try:
            await void_usage(rt, provider, key)
        except DomainError as error:
            assert error.code == "ALREADY_VOIDED"
    rt.clock = lambda: datetime(2026, 12, 2, tzinfo=UTC)
    await closing.close_period(rt, owner, "2026-11")

    for period in ("2026-10", "2026-11"):
        balance = await postings(rt, network.id, period)
        async with rt.sessions() as session:
            finals = list(await session.scalars(select(FinalStatement).where(FinalStatement.network_id == network.id, FinalStatement.period == period)))
        assert sum(s.receivable - s.payable for s in finals) == 0
        assert {s.party_id: s.receivable - s.payable for s in finals} == {p: b for p, b in balance.items() if b or p in {s.party_id for s in finals}}

    async with rt.sessions() as session:
        net = await session.get(Network, network.id)
        services = [await session.get(Service, service.id)]
        recomputed = defaultdict(int)
        for entry in await settlement.period_entries(session, net, services, "2026-10"):
            recomputed[(entry.payer, entry.payee)] += entry.amount
        booked = defaultdict(int)
        for entry in await session.scalars(select(LedgerEntry).where(LedgerEntry.network_id == network.id, LedgerEntry.origin_period == "2026-10")):
            booked[(entry.payer_id, entry.payee_id)] += entry.amount
    assert {k: v for k, v in booked.items() if v} == {k: v for k, v in recomputed.items() if v}

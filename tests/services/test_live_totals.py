"""Running totals against a full recomputation from the raw events, on random data."""

import random
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal as D

import pytest
from sqlalchemy import select

from app.auth import OPERATOR, Principal
from app.billing.money import RoundingMode, from_micros
from app.billing.pricing import Charge, ChargeModel, Tier, price_line, usage_of
from app.errors import DomainError
from app.billing.waterfall import MetricUsage, ShareBase, ShareKind, split_service
from app.ingest.items import UsageItem
from app.ingest.record import record_usage
from app.ingest.void import void_usage
from app.services import catalog, flows, networks, parties, settlement
from app.services.agreements import AgreementDraft, RuleDraft, add_agreement, agreements_in_force, leg_of
from models import UsageEvent

CHARGES = [
    Charge(
        metric="minutes",
        model=ChargeModel.GRADUATED,
        tiers=(Tier(D("10"), D("0.30"), D("0.50")), Tier(D("55.5"), D("0.25")), Tier(None, D("0.199"), D("1")))
    ),
    Charge(metric="rental", model=ChargeModel.FLAT, unit_price=D("1.00")),
    Charge(metric="fare", model=ChargeModel.PERCENTAGE, rate_percent=D("2.5"), fixed_fee=D("0.10"), min_per_event=D("0.25"), max_per_event=D("2.00")),
]


async def build(rt, first_period: str | None = None):
    created = await networks.create_network(
        rt, OPERATOR, name="Random", currency="EUR", owner_name="Owner", rounding_mode=RoundingMode.HALF_EVEN, first_period=first_period
    )
    owner = Principal(created.network.id, created.owner.id, "OWNER")

    async def onboard(name, kind="PARTNER"):
        return (await parties.onboard_partner(rt, owner, name=name, kind=kind, external_ref=None, agreements=[], issue_api_key=False)).party

    provider = await onboard("Provider", "PROVIDER")
    a, b, c, d, e = [await onboard(n) for n in "ABCDE"]
    service, _ = await catalog.create_service(rt, owner, name="Rides", provider_id=provider.id, billed_by_id=None, currency=None, charges=CHARGES)
    as_provider = Principal(created.network.id, provider.id, "PROVIDER")
    as_a = Principal(created.network.id, a.id, "PARTNER")
    terms = [
        (owner, provider, RuleDraft(ShareKind.PERCENT, percent=D("70"))),
        (owner, a, RuleDraft(ShareKind.PER_UNIT, amount=D("0.013"), metric="minutes", min=D("0.50"))),
        (as_provider, c, RuleDraft(ShareKind.PERCENT, percent=D("10"), base=ShareBase.REMAINING, priority=10)),
        (as_provider, b, RuleDraft(ShareKind.REMAINDER, weight=D("1"))),
        (as_provider, d, RuleDraft(ShareKind.REMAINDER, weight=D("2"))),
        (as_a, e, RuleDraft(ShareKind.PER_EVENT, amount=D("0.05"), metric="rental", max=D("1.00"))),
    ]
    for payer, payee, rule in terms:  # drawn by the owner: the payers cannot see their payees yet
        draft = AgreementDraft(service_id=service.id, payer_id=payer.party_id, payee_id=payee.id, rule=rule,
                               effective_from=first_period)
        await add_agreement(rt, owner, draft)
    return created.network, owner, as_provider, service


def random_item(rng: random.Random, service_id: int, key: str, now: datetime) -> UsageItem:
    metric = rng.choice(["minutes", "rental", "fare"])
    quantity = {
        "minutes": D(rng.randint(0, 90_000_000)).scaleb(-6),
        "rental": D(1),
        "fare": D(rng.randint(0, 20_000)).scaleb(-2),
    }[metric]
    return UsageItem(key, service_id, f"consumer-{rng.randint(1, 5)}", metric, quantity, now)


async def recompute(rt, network, service, period):
    """Price and split the period from the raw events alone."""
    async with rt.sessions() as session:
        events = list(await session.scalars(select(UsageEvent).where(UsageEvent.service_id == service.id, UsageEvent.voided_at.is_(None))))
        legs = [leg_of(a) for a in await agreements_in_force(session, network.id, service.id, period)]
    by_line = defaultdict(list)
    for event in events:
        by_line[(event.consumer_id, event.metric)].append(from_micros(event.quantity))
    charges = {c.metric: c for c in CHARGES}
    mode = RoundingMode(network.rounding_mode)
    root = sum(price_line(charges[m], usage_of(charges[m], qs), 2, mode) for (_, m), qs in by_line.items())
    metrics = defaultdict(lambda: [D(0), 0])
    for event in events:
        metrics[event.metric][0] += from_micros(event.quantity)
        metrics[event.metric][1] += 1
    split = split_service(service.billed_by_id, root, legs, {m: MetricUsage(q, n) for m, (q, n) in metrics.items()}, 2, mode)
    return root, split.flows


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_live_flows_equal_a_full_recomputation_from_the_events(rt, seed):
    rng = random.Random(seed)
    network, owner, provider, service = await build(rt)
    now = datetime.now(UTC)
    keys = []
    for batch in range(6):
        items = [random_item(rng, service.id, f"s{seed}-{batch}-{i}", now) for i in range(rng.randint(1, 25))]
        recorded = await record_usage(rt, provider, items)
        assert recorded.count("ACCEPTED") == len(items)
        keys += [i.idempotency_key for i in items]
        for key in rng.sample(keys, k=min(len(keys), rng.randint(0, 3))):
            try:
                await void_usage(rt, provider, key)
            except DomainError as error:  # sampled again after an earlier void
                assert error.code == "ALREADY_VOIDED"
    period = now.strftime("%Y-%m")
    expected_root, expected_flows = await recompute(rt, network, service, period)
    live = await settlement.revenue_flows(rt, owner, period)
    assert {(f.payer_id, f.payee_id): f.amount for f in live} == dict(expected_flows)
    async with rt.sessions() as session:
        revenue = await flows.service_revenues(session, owner, network.id, [service.id], period)
    assert revenue == {service.id: expected_root}

"""The invariants of DESIGN §5, over random agreement graphs, rules and usage."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.billing.money import BillingError, RoundingMode
from app.billing.waterfall import (
    Leg,
    MetricUsage,
    ShareBase,
    ShareKind,
    closes_cycle,
    split_service,
)

BILLING_PARTY = 0
METRICS = ("minutes", "rental", "km")  # "km" is never used: its legs come to their minimum


def decimals(max_units: int, places: int) -> st.SearchStrategy[Decimal]:
    return st.builds(lambda units: Decimal(units).scaleb(-places), st.integers(0, max_units))


EXPONENTS = (0, 2, 3)
KINDS = st.sampled_from(ShareKind)
BASES = st.sampled_from(ShareBase)
PRIORITIES = st.sampled_from([0, 100, 100, 200])
PERCENTS = decimals(100 * 10**6, 6)
AMOUNTS = decimals(10**7, 6)
WEIGHTS = decimals(10**4, 2).filter(bool)
LEG_METRICS = st.sampled_from(METRICS)
CLAMPS = {exponent: st.none() | decimals(10**5, exponent) for exponent in EXPONENTS}
QUANTITIES = decimals(10**10, 6)
EVENTS = st.integers(0, 5)


@st.composite
def one_leg(draw, parties: int, exponent: int, seq: int) -> Leg:
    """One leg from a lower to a higher party number, so that the graph is acyclic."""
    payer = draw(st.integers(0, parties - 2))
    kind = draw(KINDS)
    match kind:
        case ShareKind.PERCENT:
            terms = {"percent": draw(PERCENTS), "base": draw(BASES)}
        case ShareKind.PER_UNIT | ShareKind.PER_EVENT:
            terms = {"amount": draw(AMOUNTS), "metric": draw(LEG_METRICS)}
        case ShareKind.REMAINDER:
            terms = {"weight": draw(WEIGHTS)}
    if kind is not ShareKind.REMAINDER:
        # Optional per-period min and max in the currency's places, min <= max.
        low, high = draw(CLAMPS[exponent]), draw(CLAMPS[exponent])
        if low is not None and high is not None and low > high:
            low, high = high, low
        terms |= {"min": low, "max": high}
    return Leg(
        key=f"leg{seq}",
        payer=payer,
        payee=draw(st.integers(payer + 1, parties - 1)),
        kind=kind,
        priority=draw(PRIORITIES),
        seq=seq,
        **terms,
    )


@st.composite
def services(draw) -> dict:
    """split_service's arguments: a random agreement DAG, root pool, usage and currency."""
    parties = draw(st.integers(2, 7))
    exponent = draw(st.sampled_from(EXPONENTS))
    count = draw(st.integers(0, 10))
    usage = {
        metric: MetricUsage(quantity=draw(QUANTITIES), events=draw(EVENTS))
        for metric in METRICS[:2]
    }
    if not any(metric.events for metric in usage.values()):
        usage["rental"] = MetricUsage(quantity=Decimal(1), events=1)
    return {
        "billing_party": BILLING_PARTY,
        "root_pool": draw(st.integers(0, 10**8)),
        "legs": [draw(one_leg(parties, exponent, seq)) for seq in range(count)],
        "usage": usage,
        "exponent": exponent,
        "mode": draw(st.sampled_from(RoundingMode)),
    }


@given(service=services())
def test_every_pool_is_conserved_and_consumers_money_is_all_retained(service):
    result = split_service(**service)
    for party, pool in result.pools.items():
        outflows = sum(
            result.leg_amounts[leg.key] for leg in service["legs"] if leg.payer == party
        )
        assert outflows + result.retained[party] == pool
        inflows = sum(amount for (_, payee), amount in result.flows.items() if payee == party)
        assert pool == (service["root_pool"] if party == BILLING_PARTY else inflows)
    assert sum(result.retained.values()) == service["root_pool"]
    assert sum(result.flows.values()) == sum(result.leg_amounts.values())


@given(service=services())
def test_remainder_legs_are_never_negative_even_in_a_shortfall(service):
    result = split_service(**service)
    remainders = [leg.key for leg in service["legs"] if leg.kind is ShareKind.REMAINDER]
    assert all(result.leg_amounts.get(key, 0) >= 0 for key in remainders)


@given(service=services(), data=st.data())
def test_the_same_legs_in_any_order_give_the_same_split(service, data):
    shuffled = data.draw(st.permutations(service["legs"]))
    assert split_service(**{**service, "legs": shuffled}) == split_service(**service)


@given(
    edges=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4)), max_size=8),
)
def test_split_refuses_exactly_the_graphs_that_closes_cycle_refuses(edges):
    # The billing party pays every other party, so that every leg is reached.
    edges = [(BILLING_PARTY, party) for party in range(1, 5)] + edges
    legs = [
        Leg(key=n, payer=payer, payee=payee, kind=ShareKind.PERCENT, percent=Decimal(10))
        for n, (payer, payee) in enumerate(edges)
    ]
    cyclic = any(closes_cycle(edges[:n], edges[n]) for n in range(len(edges)))
    usage = {"rental": MetricUsage(quantity=Decimal(1), events=1)}
    if cyclic:
        with pytest.raises(BillingError) as raised:
            split_service(BILLING_PARTY, 100, legs, usage, 2, RoundingMode.HALF_UP)
        assert raised.value.code == "AGREEMENT_CYCLE"
    else:
        result = split_service(BILLING_PARTY, 100, legs, usage, 2, RoundingMode.HALF_UP)
        assert sum(result.retained.values()) == 100

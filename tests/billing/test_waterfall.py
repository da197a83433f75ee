"""The waterfall of DESIGN §5: worked examples, leg rules, graphs, cycles and rule validation."""

from decimal import Decimal

import pytest

from app.billing.money import BillingError, RoundingMode
from app.billing.pricing import Charge, ChargeModel, price_line, usage_of
from app.billing.waterfall import (
    FLOW_LIMIT,
    FlowOverflow,
    Leg,
    MetricUsage,
    ShareBase,
    ShareKind,
    Split,
    closes_cycle,
    split_service,
    validate_leg,
)

D = Decimal
HALF_UP = RoundingMode.HALF_UP
HALF_EVEN = RoundingMode.HALF_EVEN
PERCENT, PER_UNIT, PER_EVENT, REMAINDER = (
    ShareKind.PERCENT,
    ShareKind.PER_UNIT,
    ShareKind.PER_EVENT,
    ShareKind.REMAINDER,
)
DECIMAL_TERMS = {"percent", "amount", "weight", "min", "max"}
ONE_RENTAL = {"minutes": MetricUsage(D(30), 1), "rental": MetricUsage(D(1), 1)}


def leg(key, payer, payee, kind=PERCENT, **terms) -> Leg:
    """A leg whose decimal terms are given as strings; seq follows the key's digits."""
    decimals = {name: D(terms.pop(name)) for name in DECIMAL_TERMS & terms.keys()}
    return Leg(key, payer, payee, kind, **{"seq": int(key[1:]), **terms, **decimals})


def edge(key, payer, payee) -> Leg:
    return leg(key, payer, payee, percent="10")


def split(root_pool, legs, usage=ONE_RENTAL, exponent=2, mode=HALF_UP) -> Split:
    return split_service("owner", root_pool, legs, usage, exponent, mode)


def test_worked_example_of_car_sharing_to_the_cent():
    plan = [
        Charge("minutes", ChargeModel.PER_UNIT, unit_price=D("0.29")),
        Charge("rental", ChargeModel.FLAT, unit_price=D("1.00")),
    ]
    rental = {"minutes": [D(30)], "rental": [D(1)]}
    root_pool = sum(
        price_line(charge, usage_of(charge, rental[charge.metric]), 2, HALF_UP) for charge in plan
    )
    legs = [
        leg("a1", "owner", "HelpDesk24", percent="2"),
        leg("a2", "owner", "ParkSpace", PER_UNIT, amount="0.02", metric="minutes"),
        leg("a3", "owner", "CityCar", percent="85"),
        leg("a4", "CityCar", "FleetCare", PER_EVENT, amount="0.50", metric="rental"),
        leg("a5", "HelpDesk24", "CallCenter Nord", percent="40"),
    ]

    result = split(root_pool, legs)

    assert root_pool == 970
    assert result == Split(
        pools={"owner": 970, "HelpDesk24": 19, "ParkSpace": 60, "CityCar": 825, "FleetCare": 50,
               "CallCenter Nord": 8},
        leg_amounts={"a1": 19, "a2": 60, "a3": 825, "a4": 50, "a5": 8},
        flows={("owner", "HelpDesk24"): 19, ("owner", "ParkSpace"): 60, ("owner", "CityCar"): 825,
               ("CityCar", "FleetCare"): 50, ("HelpDesk24", "CallCenter Nord"): 8},
        retained={"owner": 66, "HelpDesk24": 11, "ParkSpace": 60, "CityCar": 775, "FleetCare": 50,
                  "CallCenter Nord": 8},
    )
    assert sum(result.retained.values()) == 970


def test_remaining_base_is_the_pool_minus_earlier_legs_as_rounded():
    legs = [
        leg("a1", "owner", "p", percent="1.5"),
        leg("a2", "owner", "q", percent="80", base=ShareBase.REMAINING),
    ]
    result = split(100, legs)
    assert result.leg_amounts == {"a1": 2, "a2": 78}
    assert result.retained["owner"] == 20


@pytest.mark.parametrize(
    ("legs", "amounts"),
    [
        ([leg("a1", "owner", "p", percent="50", base=ShareBase.REMAINING, priority=10),
          leg("a2", "owner", "q", percent="50", priority=20)], {"a1": 50, "a2": 50}),
        ([leg("a1", "owner", "p", percent="50", base=ShareBase.REMAINING, priority=20),
          leg("a2", "owner", "q", percent="50", priority=10)], {"a1": 25, "a2": 50}),
        ([leg("a2", "owner", "p", percent="50", base=ShareBase.REMAINING),
          leg("a1", "owner", "q", percent="50", base=ShareBase.REMAINING)], {"a1": 50, "a2": 25}),
        ([leg("a1", "owner", "p", percent="90", base=ShareBase.REMAINING, priority=200),
          leg("a2", "owner", "q", PER_EVENT, amount="1.50", metric="rental")],
         {"a1": 0, "a2": 150}),
    ],
    ids=[
        "lower-priority-runs-first",
        "priority-beats-creation-order",
        "equal-priorities-run-in-creation-order-whatever-the-input-order",
        "remaining-below-zero-counts-as-zero",
    ],
)
def test_legs_run_in_ascending_priority_then_creation_order(legs, amounts):
    assert split(100, legs).leg_amounts == amounts


@pytest.mark.parametrize(
    ("terms", "amount"),
    [
        ({"percent": "1", "min": "0.50"}, 50),
        ({"percent": "85", "max": "5.00"}, 500),
        ({"percent": "10", "min": "0.05", "max": "5.00"}, 97),
        ({"percent": "0", "min": "0.01"}, 1),
        ({"kind": PER_UNIT, "amount": "0.02", "metric": "km", "min": "1.00"}, 100),
        ({"kind": PER_EVENT, "amount": "0.50", "metric": "rental", "max": "0.25"}, 25),
        ({"kind": PER_UNIT, "amount": "0.333", "metric": "minutes", "max": "5.00"}, 500),
        ({"kind": PER_UNIT, "amount": "0.0005", "metric": "minutes"}, 2),
    ],
    ids=[
        "minimum-lifts-a-small-percentage",
        "maximum-caps-a-large-percentage",
        "amount-between-the-bounds-is-untouched",
        "minimum-is-owed-from-a-zero-percentage",
        "minimum-is-owed-without-usage-of-the-metric",
        "maximum-caps-per-event",
        "per-unit-capped",
        "per-unit-sub-cent-amount-rounds-once",
    ],
)
def test_min_and_max_clamp_the_exact_amount_before_rounding(terms, amount):
    kind, terms = terms.get("kind", PERCENT), {k: v for k, v in terms.items() if k != "kind"}
    assert split(970, [leg("a1", "owner", "p", kind, **terms)]).leg_amounts == {"a1": amount}


@pytest.mark.parametrize(
    ("pool", "terms", "exponent", "half_up", "half_even"),
    [
        (50, {"percent": "5"}, 2, 3, 2),
        (1001, {"percent": "33.3"}, 0, 333, 333),
        (25, {"percent": "50"}, 0, 13, 12),
        (1000, {"percent": "12.35"}, 3, 124, 124),
        (1000, {"percent": "0.05"}, 3, 1, 0),
        (100, {"kind": PER_UNIT, "amount": "0.0005", "metric": "minutes"}, 3, 15, 15),
    ],
    ids=["euro-tie", "yen-without-minor-units", "yen-tie", "dinar", "dinar-tie", "dinar-per-unit"],
)
def test_legs_round_with_the_networks_mode_in_the_currencys_units(
    pool, terms, exponent, half_up, half_even
):
    kind, terms = terms.get("kind", PERCENT), {k: v for k, v in terms.items() if k != "kind"}
    legs = [leg("a1", "owner", "p", kind, **terms)]
    assert split(pool, legs, exponent=exponent).leg_amounts == {"a1": half_up}
    assert split(pool, legs, exponent=exponent, mode=HALF_EVEN).leg_amounts == {"a1": half_even}


def test_fixed_legs_beyond_the_pool_leave_a_shortfall():
    legs = [
        leg("a1", "owner", "p", PER_EVENT, amount="2.00", metric="rental"),
        leg("a2", "owner", "q", REMAINDER, weight="1"),
    ]
    result = split(100, legs)
    assert result.leg_amounts == {"a1": 200, "a2": 0}
    assert result.retained == {"owner": -100, "p": 200, "q": 0}
    assert sum(result.retained.values()) == 100


@pytest.mark.parametrize(
    ("pool", "weights", "amounts", "retained"),
    [
        (5, ["1", "1"], [3, 2], 0),
        (100, ["1", "2", "1"], [25, 50, 25], 0),
        (1, ["1", "1", "1"], [1, 0, 0], 0),
        (0, ["1", "1"], [0, 0], 0),
    ],
    ids=[
        "leftover-cent-goes-to-the-earlier-leg",
        "shared-by-weight",
        "single-cent-to-the-first-of-equals",
        "nothing-left-shares-nothing",
    ],
)
def test_remainder_legs_share_what_is_left_by_weight(pool, weights, amounts, retained):
    legs = [leg(f"a{n}", "owner", f"p{n}", REMAINDER, weight=w) for n, w in enumerate(weights)]
    result = split(pool, list(reversed(legs)))
    assert [result.leg_amounts[f"a{n}"] for n in range(len(weights))] == amounts
    assert result.retained["owner"] == retained


def test_remainder_shares_what_the_fixed_legs_leave():
    legs = [
        leg("a1", "owner", "p", REMAINDER, weight="1", priority=1),
        leg("a2", "owner", "q", percent="30", priority=500),
    ]
    assert split(1000, legs).leg_amounts == {"a1": 700, "a2": 300}


def test_a_party_paid_by_two_payers_splits_their_sum():
    legs = [
        leg("a1", "owner", "A", percent="50"),
        leg("a2", "owner", "B", percent="50"),
        leg("a3", "A", "C", percent="10"),
        leg("a4", "B", "C", percent="20"),
        leg("a5", "C", "D", REMAINDER, weight="1"),
    ]
    result = split(1000, legs)
    assert result.pools == {"owner": 1000, "A": 500, "B": 500, "C": 150, "D": 150}
    assert result.retained == {"owner": 0, "A": 450, "B": 400, "C": 0, "D": 150}


def test_legs_of_one_payer_to_one_payee_form_one_flow():
    legs = [
        leg("a1", "owner", "p", percent="10"),
        leg("a2", "owner", "p", PER_EVENT, amount="1", metric="rental"),
    ]
    result = split(1000, legs)
    assert result.flows == {("owner", "p"): 200}
    assert result.leg_amounts == {"a1": 100, "a2": 100}


def test_a_party_with_a_zero_pool_still_pays_its_fixed_legs():
    legs = [
        leg("a1", "owner", "A", percent="0"),
        leg("a2", "A", "B", PER_EVENT, amount="1.00", metric="rental"),
    ]
    result = split(970, legs)
    assert result.pools == {"owner": 970, "A": 0, "B": 100}
    assert result.retained == {"owner": 970, "A": -100, "B": 100}


def test_legs_of_parties_the_billing_party_does_not_reach_are_ignored():
    legs = [
        leg("a1", "owner", "A", percent="10"),
        leg("a2", "X", "A", percent="50"),
        leg("a3", "X", "Y", percent="50"),
        leg("a4", "Y", "X", percent="50"),
    ]
    result = split(1000, legs)
    assert result.pools == {"owner": 1000, "A": 100}
    assert result.leg_amounts == {"a1": 100}


@pytest.mark.parametrize(
    "usage",
    [{}, {"minutes": MetricUsage(D(0), 0)}],
    ids=["no-metrics", "no-events"],
)
def test_a_service_without_usage_splits_nothing(usage):
    legs = [leg("a1", "owner", "p", PER_EVENT, amount="1", metric="rental", min="5.00")]
    assert split(0, legs, usage=usage) == Split()


@pytest.mark.parametrize(
    "legs",
    [
        [edge("a1", "owner", "A"), edge("a2", "A", "B"), edge("a3", "B", "A")],
        [edge("a1", "owner", "A"), edge("a2", "A", "owner")],
        [edge("a1", "owner", "A"), edge("a2", "A", "A")],
        [edge("a1", "owner", "owner")],
        [edge("a1", "owner", "A"), edge("a2", "owner", "B"), edge("a3", "A", "C"),
         edge("a4", "C", "B"), edge("a5", "B", "A")],
    ],
    ids=["two-partners", "back-to-the-billing-party", "self-leg", "billing-party-pays-itself",
         "through-a-diamond"],
)
def test_reachable_legs_forming_a_cycle_raise_agreement_cycle(legs):
    with pytest.raises(BillingError) as raised:
        split(1000, legs)
    assert raised.value.code == "AGREEMENT_CYCLE"


def test_two_legs_with_one_key_are_refused():
    legs = [leg("a1", "owner", "p", percent="1"), leg("a1", "owner", "q", percent="1")]
    with pytest.raises(BillingError) as raised:
        split(100, legs)
    assert raised.value.code == "INVALID"


@pytest.mark.parametrize(
    ("edges", "new_edge", "closes"),
    [
        ([], ("A", "A"), True),
        ([("A", "B")], ("B", "A"), True),
        ([("A", "B"), ("B", "C"), ("C", "D")], ("D", "A"), True),
        ([("A", "B"), ("B", "C")], ("A", "C"), False),
        ([("A", "B")], ("A", "B"), False),
        ([("A", "B"), ("C", "D")], ("D", "A"), False),
        ([("A", "B"), ("A", "C"), ("B", "D"), ("C", "D")], ("D", "A"), True),
    ],
    ids=["self-edge", "back-edge", "long-chain-back", "shortcut", "parallel-edge",
         "separate-chains", "diamond-back"],
)
def test_closes_cycle(edges, new_edge, closes):
    assert closes_cycle(edges, new_edge) is closes


METRICS = {"minutes", "rental"}


def problems_of(rule: Leg, exponent: int = 2) -> list[tuple[tuple[str, ...], str]]:
    return [(problem.path, problem.code) for problem in validate_leg(rule, METRICS, exponent)]


@pytest.mark.parametrize(
    "rule",
    [
        leg("a1", "o", "p", percent="85"),
        leg("a1", "o", "p", percent="0.000001", base=ShareBase.REMAINING, min="0", max="1.00"),
        leg("a1", "o", "p", percent="100", priority=0),
        leg("a1", "o", "p", PER_UNIT, amount="0.000001", metric="minutes"),
        leg("a1", "o", "p", PER_EVENT, amount="0", metric="rental", min="1.5", max="1.50"),
        leg("a1", "o", "p", REMAINDER, weight="0.5"),
    ],
    ids=["percent", "percent-of-remaining-with-bounds", "whole-pool-first", "per-unit",
         "per-event-with-equal-bounds", "remainder"],
)
def test_valid_rules_have_no_problems(rule):
    assert problems_of(rule) == []


@pytest.mark.parametrize(
    ("rule", "exponent", "problems"),
    [
        (leg("a1", "o", "p"), 2, [(("percent",), "INVALID")]),
        (leg("a1", "o", "p", percent="100.5"), 2, [(("percent",), "INVALID")]),
        (leg("a1", "o", "p", percent="-1"), 2, [(("percent",), "INVALID")]),
        (leg("a1", "o", "p", percent="1.0000001"), 2, [(("percent",), "TOO_MANY_DECIMALS")]),
        (leg("a1", "o", "p", percent="1", amount="1"), 2, [(("amount",), "INVALID")]),
        (leg("a1", "o", "p", PER_UNIT, metric="minutes"), 2, [(("amount",), "INVALID")]),
        (leg("a1", "o", "p", PER_UNIT, amount="1"), 2, [(("metric",), "INVALID")]),
        (leg("a1", "o", "p", PER_EVENT, amount="1", metric="km"), 2,
         [(("metric",), "UNKNOWN_METRIC")]),
        (leg("a1", "o", "p", PER_EVENT, amount="-0.01", metric="rental"), 2,
         [(("amount",), "INVALID")]),
        (leg("a1", "o", "p", PER_UNIT, amount="0.0000001", metric="minutes"), 2,
         [(("amount",), "TOO_MANY_DECIMALS")]),
        (leg("a1", "o", "p", PER_UNIT, amount="1", metric="minutes", percent="5"), 2,
         [(("percent",), "INVALID")]),
        (leg("a1", "o", "p", PER_UNIT, amount="1", metric="minutes", base=ShareBase.REMAINING), 2,
         [(("base",), "INVALID")]),
        (leg("a1", "o", "p", REMAINDER), 2, [(("weight",), "INVALID")]),
        (leg("a1", "o", "p", REMAINDER, weight="0"), 2, [(("weight",), "INVALID")]),
        (leg("a1", "o", "p", REMAINDER, weight="1", min="1", max="2", percent="5", amount="1",
             metric="rental"), 2,
         [(("percent",), "INVALID"), (("amount",), "INVALID"), (("metric",), "INVALID"),
          (("min",), "INVALID"), (("max",), "INVALID")]),
        (leg("a1", "o", "p", percent="1", weight="1"), 2, [(("weight",), "INVALID")]),
        (leg("a1", "o", "p", percent="1", min="-1"), 2, [(("min",), "INVALID")]),
        (leg("a1", "o", "p", percent="1", max="0.001"), 2, [(("max",), "TOO_MANY_DECIMALS")]),
        (leg("a1", "o", "p", percent="1", max="0.001"), 3, []),
        (leg("a1", "o", "p", percent="1", min="0.5"), 0, [(("min",), "TOO_MANY_DECIMALS")]),
        (leg("a1", "o", "p", percent="1", min="2", max="1"), 2, [(("min",), "INVALID")]),
        (leg("a1", "o", "p", percent="1", priority=-1), 2, [(("priority",), "INVALID")]),
        (leg("a1", "o", "p", PER_EVENT, amount="NaN", min="Infinity"), 2,
         [(("amount",), "INVALID"), (("metric",), "INVALID"), (("min",), "INVALID")]),
    ],
    ids=[
        "percent-missing",
        "percent-above-100",
        "percent-negative",
        "percent-with-seven-places",
        "amount-foreign-to-percent",
        "amount-missing",
        "metric-missing",
        "metric-the-service-does-not-charge",
        "amount-negative",
        "amount-with-seven-places",
        "percent-foreign-to-per-unit",
        "base-only-on-percent",
        "weight-missing",
        "weight-zero",
        "remainder-takes-nothing-but-a-weight",
        "weight-foreign-to-percent",
        "min-negative",
        "max-finer-than-cents",
        "max-in-fils-for-dinar",
        "min-finer-than-yen",
        "min-above-max",
        "priority-negative",
        "every-problem-at-once",
    ],
)
def test_validate_leg_reports_every_problem_with_its_path(rule, exponent, problems):
    assert problems_of(rule, exponent) == problems


MANY_MINUTES = {"minutes": MetricUsage(D(50_000), 1)}
"With 10^12 a minute, 5 x 10^18 cents: past FLOW_LIMIT (about 4.6 x 10^18), within 64 bits."


@pytest.mark.parametrize(
    ("root_pool", "legs", "named"),
    [
        (1000, [leg("a1", "owner", "p", PER_UNIT, amount="1000000000000", metric="minutes")], "a1"),
        (1000, [leg("a1", "owner", "p", PER_UNIT, amount="500000000000", metric="minutes"),
                leg("a2", "owner", "p", PER_UNIT, amount="500000000000", metric="minutes")], "a2"),
        (1000, [leg("a1", "owner", "p", PER_UNIT, amount="600000000000", metric="minutes"),
                leg("a2", "owner", "q", PER_UNIT, amount="700000000000", metric="minutes")], "a2"),
        (FLOW_LIMIT + 1, [], None),
    ],
    ids=["one-leg", "a flow of two legs", "retained shortfall names the largest leg", "consumers-payments-alone"],
)
def test_an_amount_past_the_flow_limit_raises_flow_overflow_naming_its_leg(root_pool, legs, named):
    with pytest.raises(FlowOverflow) as raised:
        split(root_pool, legs, MANY_MINUTES)
    assert (raised.value.code, raised.value.leg) == ("FLOW_OVERFLOW", named)


def test_an_amount_at_the_flow_limit_is_split():
    result = split(FLOW_LIMIT, [leg("a1", "owner", "p", percent="100")], MANY_MINUTES)
    assert result.flows == {("owner", "p"): FLOW_LIMIT} and result.retained == {"owner": 0, "p": FLOW_LIMIT}

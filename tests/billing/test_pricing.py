"""Pricing: every charge model's exact amount, rounding once, usage totals and plan validation."""

from decimal import Decimal, localcontext

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.billing.money import EXACT, BillingError, RoundingMode
from app.billing.pricing import (
    Charge,
    ChargeModel,
    LineUsage,
    Tier,
    add_event,
    line_amount,
    price_line,
    usage_of,
    validate_charges,
)
from tests.billing.strategies import charges, decimals

D = Decimal
HALF_UP = RoundingMode.HALF_UP
HALF_EVEN = RoundingMode.HALF_EVEN

TIERS = (Tier(D(10), D("1.00"), D(5)), Tier(D(20), D("0.50"), D(2)), Tier(None, D("0.10"), D(1)))
PER_MINUTE = Charge("minutes", ChargeModel.PER_UNIT, unit_price=D("0.29"))
PER_RENTAL = Charge("rental", ChargeModel.FLAT, unit_price=D("1.00"))
GRADUATED = Charge("calls", ChargeModel.GRADUATED, tiers=TIERS)
VOLUME = Charge("calls", ChargeModel.VOLUME, tiers=TIERS)
PACKAGE = Charge(
    "sms", ChargeModel.PACKAGE, package_size=D(100), package_price=D("2.50"), free_units=D(50)
)
HALF_PACKAGE = Charge("gb", ChargeModel.PACKAGE, package_size=D("0.5"), package_price=D("2.50"))
PERCENT_FEE = Charge("payment", ChargeModel.PERCENTAGE, rate_percent=D("2.9"), fixed_fee=D("0.30"))
ONE_PERCENT = Charge("payment", ChargeModel.PERCENTAGE, rate_percent=D(1))
CLAMPED = Charge(
    "payment",
    ChargeModel.PERCENTAGE,
    rate_percent=D(1),
    min_per_event=D("0.10"),
    max_per_event=D("1.00"),
)
FLOORED = Charge("payment", ChargeModel.PERCENTAGE, rate_percent=D(1), min_per_event=D("0.25"))
CAPPED = Charge(
    "payment", ChargeModel.PERCENTAGE, rate_percent=D(1), fixed_fee=D("0.05"), max_per_event=D(1)
)
HALF_YEN_PER_MINUTE = Charge("minutes", ChargeModel.PER_UNIT, unit_price=D("0.5"))
HALF_FIL_PER_MINUTE = Charge("minutes", ChargeModel.PER_UNIT, unit_price=D("0.0005"))


def events(*quantities: str) -> list[Decimal]:
    return [D(quantity) for quantity in quantities]


@pytest.mark.parametrize(
    ("charge", "quantities", "amount"),
    [
        (PER_MINUTE, events("30"), D("8.70")),
        (PER_MINUTE, events("1.5"), D("0.435")),
        (PER_MINUTE, events("0"), D(0)),
        (PER_MINUTE, events("10", "20.000001"), D("8.70000029")),
        (PER_RENTAL, events("1", "1", "1"), D("3.00")),
        (PER_RENTAL, events("0"), D("1.00")),
        (GRADUATED, events("0"), D(5)),
        (GRADUATED, events("2.5"), D("7.5")),
        (GRADUATED, events("10"), D(15)),
        (GRADUATED, events("10.000001"), D("17.0000005")),
        (GRADUATED, events("4", "6"), D(15)),
        (GRADUATED, events("20"), D(22)),
        (GRADUATED, events("20.000001"), D("23.0000001")),
        (GRADUATED, events("25"), D("23.5")),
        (VOLUME, events("0"), D(5)),
        (VOLUME, events("10"), D(15)),
        (VOLUME, events("10.000001"), D("7.0000005")),
        (VOLUME, events("20"), D(12)),
        (VOLUME, events("20.000001"), D("3.0000001")),
        (VOLUME, events("25"), D("3.5")),
        (PACKAGE, events("0"), D(0)),
        (PACKAGE, events("50"), D(0)),
        (PACKAGE, events("50.000001"), D("2.50")),
        (PACKAGE, events("100", "50"), D("2.50")),
        (PACKAGE, events("150.5"), D("5.00")),
        (HALF_PACKAGE, events("1.2"), D("7.50")),
        (HALF_PACKAGE, events("1"), D("5.00")),
        (ONE_PERCENT, events("0.50", "0.50", "0.50"), D("0.015")),
        (PERCENT_FEE, events("10", "20"), D("1.47")),
        (CLAMPED, events("5", "10", "50", "100", "500"), D("2.70")),
        (CLAMPED, events("0"), D("0.10")),
        (FLOORED, events("10", "100"), D("1.25")),
        (CAPPED, events("10", "200"), D("1.15")),
    ],
    ids=[
        "per-unit",
        "per-unit-fractional-quantity",
        "per-unit-zero-quantity",
        "per-unit-sums-events-exactly",
        "flat-counts-events",
        "flat-ignores-quantity",
        "graduated-zero-usage-pays-the-first-tiers-fee",
        "graduated-fractional-inside-the-first-tier",
        "graduated-exactly-at-up-to-stays-in-the-tier",
        "graduated-just-above-up-to-enters-the-next-tier",
        "graduated-prices-the-line-total-not-each-event",
        "graduated-exactly-at-the-second-up-to",
        "graduated-just-above-the-second-up-to",
        "graduated-in-the-open-tier",
        "volume-zero-usage-falls-in-the-first-tier",
        "volume-exactly-at-up-to-stays-in-the-tier",
        "volume-just-above-up-to-prices-all-units-at-the-next-tier",
        "volume-exactly-at-the-second-up-to",
        "volume-just-above-the-second-up-to",
        "volume-in-the-open-tier",
        "package-zero-usage",
        "package-free-units-cover-usage",
        "package-just-above-free-units-starts-a-package",
        "package-exactly-one-package-after-free-units",
        "package-started-package-is-charged",
        "package-fractional-size",
        "package-fractional-size-exact-fit",
        "percentage-keeps-sub-cent-amounts",
        "percentage-rate-plus-fixed-fee-per-event",
        "percentage-clamped-at-both-ends",
        "percentage-zero-value-pays-the-minimum",
        "percentage-minimum-only",
        "percentage-maximum-caps-rate-and-fee",
    ],
)
def test_line_amount_is_the_models_exact_amount(charge, quantities, amount):
    assert line_amount(charge, usage_of(charge, quantities)) == amount


@pytest.mark.parametrize(
    "charge",
    [PER_MINUTE, PER_RENTAL, GRADUATED, VOLUME, PACKAGE, ONE_PERCENT, CLAMPED],
    ids=["per-unit", "flat", "graduated", "volume", "package", "percentage", "clamped"],
)
def test_a_line_without_events_comes_to_zero(charge):
    assert line_amount(charge, LineUsage.empty()) == 0


def test_free_units_beyond_usage_leave_nothing_to_pay():
    charge = Charge(
        "sms", ChargeModel.PACKAGE, package_size=D(10), package_price=D(1), free_units=D(1000)
    )
    assert price_line(charge, usage_of(charge, events("999.999999")), 2, HALF_UP) == 0


@pytest.mark.parametrize(
    ("charge", "quantities", "exponent", "half_up", "half_even"),
    [
        (ONE_PERCENT, events("0.50", "0.50", "0.50"), 2, 2, 2),
        (ONE_PERCENT, events("2.50"), 2, 3, 2),
        (ONE_PERCENT, events("0.50", "0.50", "0.50", "0.50", "0.50"), 2, 3, 2),
        (HALF_YEN_PER_MINUTE, events("25"), 0, 13, 12),
        (HALF_FIL_PER_MINUTE, events("2469"), 3, 1235, 1234),
        (PER_MINUTE, events("30"), 2, 870, 870),
    ],
    ids=[
        "sub-cent-events-round-once-not-per-event",
        "tie-differs-by-mode",
        "summed-tie-differs-by-mode",
        "yen-tie",
        "dinar-tie",
        "exact-cents",
    ],
)
def test_price_line_rounds_the_exact_amount_once(charge, quantities, exponent, half_up, half_even):
    usage = usage_of(charge, quantities)
    assert price_line(charge, usage, exponent, HALF_UP) == half_up
    assert price_line(charge, usage, exponent, HALF_EVEN) == half_even


@pytest.mark.parametrize(
    ("quantity", "bucket"),
    [("5", "min"), ("10", "min"), ("10.000001", "mid"), ("99.999999", "mid"), ("100", "max"),
     ("500", "max")],
    ids=["below-minimum", "exactly-at-minimum", "just-above-minimum", "just-below-maximum",
         "exactly-at-maximum", "above-maximum"],
)
def test_clamped_events_are_counted_where_their_amount_lands(quantity, bucket):
    usage = add_event(CLAMPED, LineUsage.empty(), D(quantity))
    counts = {"min": usage.min_events, "mid": usage.mid_events, "max": usage.max_events}
    assert counts == {name: int(name == bucket) for name in counts}
    assert usage.mid_quantity == (D(quantity) if bucket == "mid" else 0)
    assert (usage.events, usage.quantity) == (1, D(quantity))


def test_unclamped_charges_keep_only_events_and_quantity():
    assert usage_of(PERCENT_FEE, events("10", "20")) == LineUsage(events=2, quantity=D(30))


def test_voiding_the_only_event_removes_the_line():
    usage = add_event(GRADUATED, usage_of(GRADUATED, events("3")), D(3), sign=-1)
    assert usage == LineUsage.empty()
    assert price_line(GRADUATED, usage, 2, HALF_UP) == 0


def test_add_event_refuses_a_sign_other_than_one():
    with pytest.raises(BillingError) as raised:
        add_event(PER_MINUTE, LineUsage.empty(), D(1), sign=2)
    assert raised.value.code == "INVALID"


def test_line_amount_refuses_tiers_without_an_open_end():
    charge = Charge("calls", ChargeModel.VOLUME, tiers=(Tier(D(10), D(1)),))
    with pytest.raises(BillingError) as raised:
        line_amount(charge, usage_of(charge, events("11")))
    assert raised.value.code == "INVALID_TIERS"


def problems_of(charges):
    return [(problem.path, problem.code) for problem in validate_charges(charges)]


@pytest.mark.parametrize(
    "charges",
    [
        [PER_MINUTE, PER_RENTAL],
        [GRADUATED],
        [VOLUME],
        [PACKAGE, HALF_PACKAGE],
        [PERCENT_FEE],
        [CLAMPED],
        [Charge("calls", ChargeModel.GRADUATED, tiers=(Tier(None, D(0)),))],
        [Charge("a.b:c-d_E9", ChargeModel.PER_UNIT, unit_price=D("0.000001"))],
        [Charge("m" * 64, ChargeModel.FLAT, unit_price=D(0))],
        [Charge("tx", ChargeModel.PERCENTAGE, rate_percent=D(100), min_per_event=D(1),
                max_per_event=D(1))],
    ],
    ids=["per-unit-and-flat", "graduated", "volume", "packages", "percentage", "clamped-percentage",
         "single-open-tier", "metric-punctuation", "metric-of-64-characters", "equal-clamps"],
)
def test_valid_plans_have_no_problems(charges):
    assert validate_charges(charges) == []


def per_unit(price: str, metric: str = "minutes") -> Charge:
    return Charge(metric, ChargeModel.PER_UNIT, unit_price=D(price))


def graduated(*tiers: tuple[str | None, str]) -> Charge:
    return Charge(
        "calls",
        ChargeModel.GRADUATED,
        tiers=tuple(Tier(None if up_to is None else D(up_to), D(price)) for up_to, price in tiers),
    )


@pytest.mark.parametrize(
    ("charges", "problems"),
    [
        ([], [((), "INVALID")]),
        ([per_unit("1", "")], [(("0", "metric"), "INVALID")]),
        ([per_unit("1", "m" * 65)], [(("0", "metric"), "INVALID")]),
        ([per_unit("1", "min utes")], [(("0", "metric"), "INVALID")]),
        ([per_unit("1", "minütes")], [(("0", "metric"), "INVALID")]),
        ([per_unit("1"), PER_RENTAL, per_unit("2")], [(("2", "metric"), "INVALID")]),
        ([Charge("minutes", ChargeModel.PER_UNIT)], [(("0", "unitPrice"), "INVALID")]),
        ([per_unit("-0.01")], [(("0", "unitPrice"), "INVALID")]),
        ([per_unit("0.0000001")], [(("0", "unitPrice"), "TOO_MANY_DECIMALS")]),
        ([per_unit("NaN")], [(("0", "unitPrice"), "INVALID")]),
        ([Charge("m", ChargeModel.PER_UNIT, unit_price=D(1), package_size=D(1))],
         [(("0", "packageSize"), "INVALID")]),
        ([Charge("m", ChargeModel.FLAT, unit_price=D(1), tiers=TIERS)],
         [(("0", "tiers"), "INVALID")]),
        ([Charge("m", ChargeModel.GRADUATED, unit_price=D(1), tiers=TIERS)],
         [(("0", "unitPrice"), "INVALID")]),
        ([Charge("calls", ChargeModel.VOLUME)], [(("0", "tiers"), "INVALID_TIERS")]),
        ([graduated(("10", "1"), ("20", "1"))], [(("0", "tiers", "1", "upTo"), "INVALID_TIERS")]),
        ([graduated((None, "1"), (None, "1"))], [(("0", "tiers", "0", "upTo"), "INVALID_TIERS")]),
        ([graduated(("10", "1"), ("10", "1"), (None, "1"))],
         [(("0", "tiers", "1", "upTo"), "INVALID_TIERS")]),
        ([graduated(("10", "1"), ("5", "1"), (None, "1"))],
         [(("0", "tiers", "1", "upTo"), "INVALID_TIERS")]),
        ([graduated(("0", "1"), (None, "1"))], [(("0", "tiers", "0", "upTo"), "INVALID_TIERS")]),
        ([graduated(("-5", "1"), (None, "1"))], [(("0", "tiers", "0", "upTo"), "INVALID_TIERS")]),
        ([graduated(("0.0000001", "1"), (None, "1"))],
         [(("0", "tiers", "0", "upTo"), "TOO_MANY_DECIMALS")]),
        ([graduated(("10", "-1"), (None, "1"))],
         [(("0", "tiers", "0", "unitPrice"), "INVALID_TIERS")]),
        ([Charge("calls", ChargeModel.GRADUATED, tiers=(Tier(None, D(1), D("0.0000001")),))],
         [(("0", "tiers", "0", "flatFee"), "TOO_MANY_DECIMALS")]),
        ([Charge("sms", ChargeModel.PACKAGE, package_size=D(0), package_price=D(1))],
         [(("0", "packageSize"), "INVALID")]),
        ([Charge("sms", ChargeModel.PACKAGE, package_size=D(1))],
         [(("0", "packagePrice"), "INVALID")]),
        ([Charge("sms", ChargeModel.PACKAGE, package_size=D(1), package_price=D(1),
                 free_units=D(-1))],
         [(("0", "freeUnits"), "INVALID")]),
        ([Charge("tx", ChargeModel.PERCENTAGE)], [(("0", "ratePercent"), "INVALID")]),
        ([Charge("tx", ChargeModel.PERCENTAGE, rate_percent=D("100.000001"))],
         [(("0", "ratePercent"), "INVALID")]),
        ([Charge("tx", ChargeModel.PERCENTAGE, rate_percent=D(-1))],
         [(("0", "ratePercent"), "INVALID")]),
        ([Charge("tx", ChargeModel.PERCENTAGE, rate_percent=D(1), fixed_fee=D("0.0000001"))],
         [(("0", "fixedFee"), "TOO_MANY_DECIMALS")]),
        ([Charge("tx", ChargeModel.PERCENTAGE, rate_percent=D(1), min_per_event=D(2),
                 max_per_event=D(1))],
         [(("0", "minPerEvent"), "INVALID")]),
        ([Charge("tx", ChargeModel.PER_UNIT, unit_price=D(1), min_per_event=D(1))],
         [(("0", "minPerEvent"), "INVALID")]),
        ([per_unit("-1", "a b"), graduated(("10", "1")), Charge("c", ChargeModel.FLAT)],
         [(("0", "metric"), "INVALID"), (("0", "unitPrice"), "INVALID"),
          (("1", "tiers", "0", "upTo"), "INVALID_TIERS"), (("2", "unitPrice"), "INVALID")]),
    ],
    ids=[
        "no-charges",
        "empty-metric",
        "metric-of-65-characters",
        "metric-with-a-space",
        "metric-with-a-non-ascii-letter",
        "metric-charged-twice",
        "per-unit-without-unit-price",
        "negative-unit-price",
        "unit-price-with-seven-places",
        "nan-unit-price",
        "foreign-package-size",
        "foreign-tiers",
        "foreign-unit-price-on-tiers",
        "tiers-missing",
        "last-tier-not-open-ended",
        "open-ended-tier-before-the-last",
        "up-to-repeated",
        "up-to-descending",
        "up-to-zero",
        "up-to-negative",
        "up-to-with-seven-places",
        "negative-tier-price",
        "tier-fee-with-seven-places",
        "package-size-zero",
        "package-without-price",
        "negative-free-units",
        "percentage-without-rate",
        "rate-above-100",
        "negative-rate",
        "fixed-fee-with-seven-places",
        "minimum-above-maximum",
        "clamp-on-a-per-unit-charge",
        "every-problem-of-every-charge",
    ],
)
def test_validate_charges_reports_every_problem_with_its_path(charges, problems):
    assert problems_of(charges) == problems


quantities = st.lists(decimals(10**8), max_size=12)


@given(charge=charges())
def test_generated_plans_are_valid(charge):
    assert validate_charges([charge]) == []


@given(charge=charges(), quantities=quantities)
def test_usage_of_is_adding_events_one_by_one(charge, quantities):
    folded = LineUsage.empty()
    for quantity in quantities:
        folded = add_event(charge, folded, quantity)
    assert usage_of(charge, quantities) == folded


@given(charge=charges(), quantities=quantities, data=st.data())
def test_usage_does_not_depend_on_event_order(charge, quantities, data):
    shuffled = data.draw(st.permutations(quantities))
    assert usage_of(charge, shuffled) == usage_of(charge, quantities)


@given(charge=charges(), quantities=quantities, quantity=decimals(10**8))
def test_adding_then_voiding_an_event_restores_the_usage(charge, quantities, quantity):
    usage = usage_of(charge, quantities)
    assert add_event(charge, add_event(charge, usage, quantity), quantity, sign=-1) == usage


@given(
    charge=charges(models=(ChargeModel.PERCENTAGE,)),
    quantities=st.lists(decimals(10**8), min_size=1, max_size=12),
)
def test_percentage_totals_price_like_clamping_each_event(charge, quantities):
    with localcontext(EXACT):
        expected = D(0)
        for quantity in quantities:
            amount = quantity * charge.rate_percent / 100 + (charge.fixed_fee or 0)
            if charge.min_per_event is not None:
                amount = max(amount, charge.min_per_event)
            if charge.max_per_event is not None:
                amount = min(amount, charge.max_per_event)
            expected += amount
    assert line_amount(charge, usage_of(charge, quantities)) == expected


@given(charge=charges(), quantities=st.lists(decimals(10**8), min_size=1, max_size=12))
def test_a_line_is_never_negative_and_rounds_once(charge, quantities):
    usage = usage_of(charge, quantities)
    exact = line_amount(charge, usage)
    assert exact >= 0
    with localcontext(EXACT):
        assert abs(D(price_line(charge, usage, 2, HALF_EVEN)).scaleb(-2) - exact) <= D("0.005")

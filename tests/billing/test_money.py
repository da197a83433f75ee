"""Money: currencies, decimal parsing, rounding, formatting, quantities and allocation."""

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.billing.money import (
    BillingError,
    RoundingMode,
    Unreadable,
    allocate,
    check_decimal,
    currency_exponent,
    format_amount,
    from_micros,
    minor_to_decimal,
    read_decimal,
    round_to_minor,
    to_micros,
)

HALF_UP = RoundingMode.HALF_UP
HALF_EVEN = RoundingMode.HALF_EVEN


@pytest.mark.parametrize(
    ("code", "exponent"),
    [("EUR", 2), ("JPY", 0), ("BHD", 3), ("USD", 2)],
    ids=["euro-has-cents", "yen-has-no-minor-unit", "dinar-has-fils", "dollar"],
)
def test_currency_exponent_comes_from_iso_4217(code, exponent):
    assert currency_exponent(code) == exponent


@pytest.mark.parametrize(
    "code",
    ["eur", "ZZZ", "", "EURO", "XAU", "XXX"],
    ids=["lowercase", "unknown", "empty", "too-long", "gold-has-no-minor-unit", "no-currency"],
)
def test_currency_exponent_refuses_codes_without_minor_units(code):
    with pytest.raises(BillingError) as raised:
        currency_exponent(code)
    assert raised.value.code == "INVALID_CURRENCY"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("9.70", Decimal("9.70")),
        ("1", Decimal(1)),
        ("-1.5", Decimal("-1.5")),
        ("1.5000000", Decimal("1.5")),
        ("0.000001", Decimal("0.000001")),
        ("1200", Decimal(1200)),
        ("1234567890123456789012345678.501", Decimal("1234567890123456789012345678.501")),
        (7, Decimal(7)),
        (-(10**30), Decimal(-(10**30))),
    ],
    ids=[
        "cents",
        "integer",
        "negative-sign-is-the-callers",
        "trailing-zeros-are-kept-for-the-places-check",
        "one-millionth",
        "zero-decimal-currency",
        "thirty-two-characters",
        "json-integer",
        "json-integer-of-thirty-one-digits",
    ],
)
def test_read_decimal_reads_plain_decimals_exactly(value, expected):
    read = read_decimal(value)
    assert read.is_finite() and read == expected


@pytest.mark.parametrize(
    "value",
    ["NaN", "nan", "Infinity", "-Infinity", "inf", "1e3", "1E-7", "1E+999999999", "abc", "", " 1", "1 ", "1_000",
     "1.", ".5", "1,5", "١", "0x10", "--1", "+2", "sNaN", "1" * 33, "0." + "0" * 31, 10**31, -(10**31), 10**5000],
    ids=["nan", "lowercase-nan", "infinity", "minus-infinity", "inf", "exponent",
         "negative-exponent", "huge-exponent", "letters", "empty", "leading-space", "trailing-space", "underscore",
         "trailing-point", "leading-point", "comma", "arabic-digit", "hex", "double-sign", "plus-sign",
         "signalling-nan", "thirty-three-digits", "thirty-three-characters", "integer-of-thirty-two-digits",
         "negative-integer-of-thirty-two-digits", "integer-of-five-thousand-digits"],
)
def test_read_decimal_refuses_what_is_not_a_short_plain_decimal_without_reading_it(value):
    read = read_decimal(value)
    assert isinstance(read, Unreadable) and not read.is_finite()
    assert "plain notation" in read.reason


@pytest.mark.parametrize(
    ("value", "code"),
    [(Unreadable("why"), "INVALID"), (Decimal("NaN"), "INVALID"), (Decimal("1000000000000.000001"), "INVALID"),
     (Decimal("-1000000000001"), "INVALID"), (Decimal("1000000000000"), None), (Decimal("9.705"), "TOO_MANY_DECIMALS")],
    ids=["unreadable", "nan", "above-ten-to-the-twelve", "below-minus-ten-to-the-twelve", "ten-to-the-twelve", "third-place"],
)
def test_check_decimal_refuses_unread_and_out_of_range_values_as_invalid(value, code):
    problems = check_decimal(value, ("amount",), max_places=2, minimum=Decimal(-(10**13)))
    assert [(p.path, p.code) for p in problems] == ([] if code is None else [(("amount",), code)])


@pytest.mark.parametrize(
    ("amount", "exponent", "half_up", "half_even"),
    [
        (Decimal("0.015"), 2, 2, 2),
        (Decimal("0.025"), 2, 3, 2),
        (Decimal("8.245"), 2, 825, 824),
        (Decimal("0.0149999"), 2, 1, 1),
        (Decimal("9.70"), 2, 970, 970),
        (Decimal("12.5"), 0, 13, 12),
        (Decimal("13.5"), 0, 14, 14),
        (Decimal("1.2345"), 3, 1235, 1234),
        (Decimal("-0.005"), 2, -1, 0),
        (Decimal("123456789012345678901234567890.125"), 2,
         12345678901234567890123456789013, 12345678901234567890123456789012),
    ],
    ids=["tie-rounds-up-to-even", "tie-differs-by-mode", "worked-example-8.245", "below-half",
         "already-exact", "yen-tie", "yen-tie-to-even", "dinar-tie", "negative-tie-away-from-zero",
         "beyond-28-digits"],
)
def test_round_to_minor_rounds_once_with_the_mode(amount, exponent, half_up, half_even):
    assert round_to_minor(amount, exponent, HALF_UP) == half_up
    assert round_to_minor(amount, exponent, HALF_EVEN) == half_even


@pytest.mark.parametrize(
    ("minor", "exponent", "text"),
    [(970, 2, "9.70"), (-5, 2, "-0.05"), (0, 2, "0.00"), (1200, 0, "1200"), (1234, 3, "1.234"),
     (5, 3, "0.005"), (1, 4, "0.0001"), (-1200, 0, "-1200")],
    ids=["euro", "negative-cents", "zero-keeps-its-places", "yen-has-no-point", "dinar",
         "dinar-fils", "four-places", "negative-yen"],
)
def test_amounts_carry_exactly_the_currencys_places(minor, exponent, text):
    assert format_amount(minor, exponent) == text
    amount = minor_to_decimal(minor, exponent)
    assert amount == Decimal(text)
    assert amount.as_tuple().exponent == -exponent


@pytest.mark.parametrize(
    ("quantity", "micros"),
    [(Decimal("1.5"), 1_500_000), (Decimal("0.000001"), 1), (Decimal("1000000000"), 10**15),
     (Decimal("-2"), -2_000_000), (Decimal("1.0000000"), 1_000_000), (Decimal("0"), 0)],
    ids=["fraction", "one-millionth", "a-billion-units", "negative", "trailing-zeros", "zero"],
)
def test_quantities_are_stored_as_millionths(quantity, micros):
    assert to_micros(quantity) == micros
    assert from_micros(micros) == quantity


@pytest.mark.parametrize(
    ("quantity", "code"),
    [(Decimal("0.0000001"), "TOO_MANY_DECIMALS"), (Decimal("NaN"), "INVALID"),
     (Decimal("Infinity"), "INVALID")],
    ids=["seventh-place", "nan", "infinity"],
)
def test_to_micros_refuses_what_it_cannot_store_exactly(quantity, code):
    with pytest.raises(BillingError) as raised:
        to_micros(quantity)
    assert raised.value.code == code


@pytest.mark.parametrize(
    ("total", "weights", "parts"),
    [
        (100, ["1", "1"], [50, 50]),
        (100, ["1", "1", "1"], [34, 33, 33]),
        (5, ["1", "1"], [3, 2]),
        (10, ["1", "2"], [3, 7]),
        (1, ["0.5", "0.25", "0.25"], [1, 0, 0]),
        (1, ["1", "3", "3"], [0, 1, 0]),
        (0, ["1", "2"], [0, 0]),
        (7, ["5"], [7]),
        (1, ["0.000001", "1000000"], [0, 1]),
        (3, ["1E+2", "100"], [2, 1]),
    ],
    ids=[
        "even-split",
        "leftover-cent-goes-to-the-earlier-item",
        "tie-goes-to-the-earlier-item",
        "largest-remainder-wins",
        "fractional-weights",
        "tie-among-the-largest-remainders",
        "zero-total",
        "single-weight-takes-all",
        "tiny-weight",
        "weights-in-exponent-form",
    ],
)
def test_allocate_splits_by_largest_remainder(total, weights, parts):
    assert allocate(total, [Decimal(weight) for weight in weights]) == parts


@pytest.mark.parametrize(
    ("total", "weights"),
    [(-1, ["1"]), (10, []), (10, ["1", "0"]), (10, ["-1", "2"]), (10, ["NaN"])],
    ids=["negative-total", "no-weights", "zero-weight", "negative-weight", "nan-weight"],
)
def test_allocate_refuses_what_it_cannot_split(total, weights):
    with pytest.raises(BillingError) as raised:
        allocate(total, [Decimal(weight) for weight in weights])
    assert raised.value.code == "INVALID"


weights = st.builds(
    lambda units, places: Decimal(units).scaleb(-places),
    st.integers(1, 10**9),
    st.integers(0, 6),
)


@given(total=st.integers(0, 10**12), weights=st.lists(weights, min_size=1, max_size=12))
def test_allocation_parts_sum_to_the_whole_and_stay_within_a_unit(total, weights):
    parts = allocate(total, weights)
    assert sum(parts) == total
    whole = sum(Fraction(weight) for weight in weights)
    for part, weight in zip(parts, weights):
        share = total * Fraction(weight) / whole
        assert share - 1 < part < share + 1
        assert part >= 0

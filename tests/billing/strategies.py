"""Hypothesis strategies for the pure billing core, shared by its tests."""

from decimal import Decimal

from hypothesis import strategies as st

from app.billing.pricing import Charge, ChargeModel, Tier

D = Decimal


def decimals(max_units: int, places: int = 6) -> st.SearchStrategy[Decimal]:
    return st.builds(lambda units, scale: D(units).scaleb(-scale), st.integers(0, max_units),
                     st.integers(0, places))


PRICES = decimals(10**7)
OPTIONAL_PRICES = st.none() | PRICES
TIER_BOUNDS = st.sets(decimals(10**8).filter(bool), max_size=4)
PACKAGE_SIZES = decimals(10**7).filter(bool)
FREE_UNITS = st.none() | decimals(10**8)
RATES = decimals(100)
CLAMPS = st.none() | decimals(10**6)


@st.composite
def charges(draw, models: tuple[ChargeModel, ...] = tuple(ChargeModel)) -> Charge:
    model = draw(st.sampled_from(models))
    match model:
        case ChargeModel.PER_UNIT | ChargeModel.FLAT:
            return Charge("m", model, unit_price=draw(PRICES))
        case ChargeModel.GRADUATED | ChargeModel.VOLUME:
            bounds = sorted(draw(TIER_BOUNDS))
            tiers = [Tier(up_to, draw(PRICES), draw(PRICES)) for up_to in [*bounds, None]]
            return Charge("m", model, tiers=tuple(tiers))
        case ChargeModel.PACKAGE:
            return Charge("m", model, package_size=draw(PACKAGE_SIZES), package_price=draw(PRICES),
                          free_units=draw(FREE_UNITS))
    low, high = draw(CLAMPS), draw(CLAMPS)
    if low is not None and high is not None and low > high:
        low, high = high, low
    return Charge("m", model, rate_percent=draw(RATES), fixed_fee=draw(OPTIONAL_PRICES),
                  min_per_event=low, max_per_event=high)

"""Checks of usage quantities, shared by quote and recordUsage."""

from decimal import Decimal

from app.billing.money import EXACT, QUANTITY_PLACES
from app.errors import DomainError

MAX_QUANTITY = Decimal(10) ** 9


def quantity_micros(quantity: Decimal, *path: str) -> int:
    """A usage quantity in integer millionths, once checked: finite, non-negative, at most 6
    decimals (trailing zeros do not count), at most 10^9 units. Raises DomainError with `path`.

    Exact and cheap (recordUsage checks every event): the quantity scaled by 10^6 must be whole."""
    if not quantity.is_finite():
        raise DomainError.of("INVALID", "must be a finite number", *path)
    if quantity < 0:
        raise DomainError.of("INVALID", "must not be negative", *path)
    micros = quantity.scaleb(QUANTITY_PLACES, context=EXACT)
    if micros != micros.to_integral_value():
        raise DomainError.of("TOO_MANY_DECIMALS", f"at most {QUANTITY_PLACES} decimals", *path)
    if quantity > MAX_QUANTITY:
        raise DomainError.of("QUANTITY_OVERFLOW", "at most 1000000000 units per event", *path)
    return int(micros)


def check_quantity(quantity: Decimal, *path: str) -> Decimal:
    """The quantity, once quantity_micros has found nothing wrong with it."""
    quantity_micros(quantity, *path)
    return quantity

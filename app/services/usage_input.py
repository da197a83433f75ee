"""Checks of usage quantities, shared by quote and recordUsage."""

from decimal import Decimal

from app.billing.money import QUANTITY_PLACES, decimal_places
from app.errors import DomainError

MAX_QUANTITY = Decimal(10) ** 9


def check_quantity(quantity: Decimal, *path: str) -> Decimal:
    """A usage quantity: finite, non-negative, at most 6 decimals, at most 10^9 units."""
    if not quantity.is_finite():
        raise DomainError.of("INVALID", "must be a finite number", *path)
    if quantity < 0:
        raise DomainError.of("INVALID", "must not be negative", *path)
    if decimal_places(quantity) > QUANTITY_PLACES:
        raise DomainError.of("TOO_MANY_DECIMALS", f"at most {QUANTITY_PLACES} decimals", *path)
    if quantity > MAX_QUANTITY:
        raise DomainError.of("QUANTITY_OVERFLOW", "at most 1000000000 units per event", *path)
    return quantity

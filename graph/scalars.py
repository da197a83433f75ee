"""Scalars that keep decimals exact: a Decimal travels as a string, never a float."""

import decimal

import strawberry
from strawberry.exceptions import StrawberryGraphQLError


def parse_decimal(value: object) -> decimal.Decimal:
    """Any decimal string (NaN and Infinity included: the use-cases refuse them with a field path).

    JSON floats are refused: they may already have lost digits before reaching us.
    """
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise StrawberryGraphQLError('Decimal values are sent as strings, e.g. "9.70"')
    try:
        return decimal.Decimal(str(value).strip())
    except decimal.InvalidOperation:
        raise StrawberryGraphQLError(f"{str(value)[:40]!r} is not a decimal number") from None


def serialize_decimal(value: decimal.Decimal) -> str:
    return format(value, "f")


DecimalScalar = strawberry.scalar(
    name="Decimal",
    description='An exact decimal number, sent as a string such as "9.70".',
    serialize=serialize_decimal,
    parse_value=parse_decimal,
)

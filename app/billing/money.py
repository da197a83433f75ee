"""Money and quantities: exact decimals, currency minor units, rounding and allocation.

Amounts in the API are major units (``Decimal("9.70")`` euros); stored money is an integer
number of minor units (970 cents) in a currency whose exponent fixes the precision; quantities
are stored as integer millionths. A float never enters here.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import (
    MAX_EMAX,
    MIN_EMIN,
    ROUND_HALF_EVEN,
    ROUND_HALF_UP,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
)
from enum import Enum

from iso4217 import Currency

# Arithmetic context of the billing core: 1,000 significant digits are far beyond any product of
# billing inputs, and any result that would still need rounding raises decimal.Inexact instead of
# being rounded silently. Rounding to money happens only in round_to_minor.
EXACT = Context(
    prec=1000,
    Emax=MAX_EMAX,
    Emin=MIN_EMIN,
    traps=[InvalidOperation, DivisionByZero, Overflow, Inexact],
)

QUANTITY_PLACES = 6
"""Decimal places of quantities, prices, fees and rule amounts (DESIGN §3)."""

DECIMAL_TEXT_MAX = 32
"The longest decimal input, in characters: every value read is small before any arithmetic."
MAX_AMOUNT = Decimal(10) ** 12
"The largest magnitude of a price, fee, rule amount, weight or bound (quantities stop at 10^9)."

_plain = re.compile(r"-?[0-9]+(?:\.[0-9]+)?").fullmatch
_LARGEST_TEXT = 10 ** (DECIMAL_TEXT_MAX - 1)
"Integers above it in magnitude need more than DECIMAL_TEXT_MAX characters (a sign included)."
_UNREADABLE = (
    f"must be a decimal number in plain notation such as 9.70 (digits, one optional point, an optional leading minus),"
    f" at most {DECIMAL_TEXT_MAX} characters"
)


class RoundingMode(str, Enum):
    """A network's rounding mode for turning exact amounts into minor units."""

    HALF_UP = "HALF_UP"
    HALF_EVEN = "HALF_EVEN"


_DECIMAL_ROUNDING = {RoundingMode.HALF_UP: ROUND_HALF_UP, RoundingMode.HALF_EVEN: ROUND_HALF_EVEN}


@dataclass(frozen=True)
class Problem:
    """One mistake in an input: the field's path (GraphQL names, list indexes as strings)."""

    path: tuple[str, ...]
    code: str
    message: str


class BillingError(ValueError):
    """A billing rule refused its input; `code` is the stable API error code."""

    def __init__(self, code: str, message: str, path: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.path = path


def currency_exponent(code: str) -> int:
    """Minor-unit exponent of an ISO 4217 code (EUR 2, JPY 0, BHD 3).

    Raises BillingError INVALID_CURRENCY for unknown or lowercase codes and for currencies
    without a minor unit (gold, SDR, test codes).
    """
    try:
        exponent = Currency(code).exponent
    except ValueError:
        message = f"{code!r} is not an ISO 4217 currency code"
        raise BillingError("INVALID_CURRENCY", message) from None
    if exponent is None:
        raise BillingError("INVALID_CURRENCY", f"{code} has no minor unit")
    return exponent


def decimal_places(value: Decimal) -> int:
    """Decimal places a finite value needs: trailing zeros do not count ("1.50" needs 1)."""
    _, digits, exponent = value.as_tuple()
    significant = "".join(map(str, digits)).rstrip("0")
    if not significant:
        return 0
    return max(0, -(exponent + len(digits) - len(significant)))


class Unreadable(Decimal):
    """A decimal input that read_decimal refused to read: NaN to the arithmetic, so every field's
    check refuses it as not finite, and `reason` says why (the field's problem message)."""

    reason: str

    def __new__(cls, reason: str) -> "Unreadable":
        value = super().__new__(cls, "NaN")
        value.reason = reason
        return value


def read_decimal(value: str | int) -> Decimal:
    """The one door of every decimal input (the API's Decimal scalar, usage quantities in NDJSON
    and CSV): a string in plain notation ("9.70", "-1.5", "1": digits, one optional point, an
    optional leading minus) of at most DECIMAL_TEXT_MAX characters, or an integer of as many
    digits, read exactly. Anything else (exponents, NaN, whitespace, longer texts) is judged on its
    text before Decimal() sees it, so "1E+999999999" costs nothing, and comes back Unreadable:
    each field's check (check_decimal, the quantity's) refuses it as INVALID with its path. Signs,
    places and magnitude are those checks' to judge."""
    if type(value) is str:
        if len(value) <= DECIMAL_TEXT_MAX and _plain(value):
            return Decimal(value)
    elif type(value) is int and -_LARGEST_TEXT < value < _LARGEST_TEXT:
        return Decimal(value)
    return Unreadable(_UNREADABLE)


def refusal(value: Decimal) -> str:
    """Why a decimal that is not finite is refused: the reason of an Unreadable input."""
    return value.reason if isinstance(value, Unreadable) else "must be a finite decimal"


def check_decimal(
    value: Decimal,
    path: tuple[str, ...],
    *,
    max_places: int,
    minimum: Decimal = Decimal(0),
    exclusive: bool = False,
    maximum: Decimal | None = None,
    code: str = "INVALID",
) -> list[Problem]:
    """The first problem of a decimal parameter, if any (validators report one per field).

    Checks that it was read (INVALID) and lies within MAX_AMOUNT (INVALID) before anything else,
    then the number of places (TOO_MANY_DECIMALS) and the field's own bounds (`code`;
    `exclusive` makes the minimum a strict bound).
    """
    if not value.is_finite():
        return [Problem(path, "INVALID", refusal(value))]
    if abs(value) > MAX_AMOUNT:
        return [Problem(path, "INVALID", f"must be at most {MAX_AMOUNT:f} in magnitude")]
    if decimal_places(value) > max_places:
        return [Problem(path, "TOO_MANY_DECIMALS", f"at most {max_places} decimal places allowed")]
    if exclusive and value <= minimum:
        return [Problem(path, code, f"must be greater than {minimum}")]
    if value < minimum:
        return [Problem(path, code, f"must be at least {minimum}")]
    if maximum is not None and value > maximum:
        return [Problem(path, code, f"must be at most {maximum}")]
    return []


def round_to_minor(amount: Decimal, exponent: int, mode: RoundingMode) -> int:
    """Round an exact amount in major units once, to an integer number of minor units."""
    # Positional arguments throughout this module: the decimal module's C methods take keywords
    # at two to three times the cost, on a path that runs per line of every recorded batch.
    return int(amount.scaleb(exponent, EXACT).to_integral_value(_DECIMAL_ROUNDING[mode], EXACT))


def minor_to_decimal(minor: int, exponent: int) -> Decimal:
    """Minor units as major units with exactly `exponent` places (970, 2 -> 9.70)."""
    return Decimal(minor).scaleb(-exponent, EXACT)


def format_amount(minor: int, exponent: int) -> str:
    """Minor units as the API's decimal string: "9.70", "-0.05", "1200" (JPY), "1.234" (BHD)."""
    return f"{minor_to_decimal(minor, exponent):f}"


def to_micros(q: Decimal) -> int:
    """A quantity as integer millionths; BillingError TOO_MANY_DECIMALS beyond 6 places."""
    if not q.is_finite():
        raise BillingError("INVALID", "a quantity must be a finite decimal")
    if decimal_places(q) > QUANTITY_PLACES:
        raise BillingError("TOO_MANY_DECIMALS", f"at most {QUANTITY_PLACES} decimal places allowed")
    return int(q.scaleb(QUANTITY_PLACES, EXACT))


def from_micros(m: int) -> Decimal:
    """Integer millionths back to the exact quantity."""
    return Decimal(m).scaleb(-QUANTITY_PLACES, EXACT)


def allocate(total: int, weights: Sequence[Decimal]) -> list[int]:
    """Split `total` minor units by positive weights with the largest-remainder method.

    Each part is the floor of its exact share; the leftover units go one each to the largest
    remainders, ties to the earlier item. The parts always sum to `total`. A negative total,
    an empty list and a weight that is not a positive finite decimal raise BillingError INVALID.
    """
    if total < 0:
        raise BillingError("INVALID", "cannot allocate a negative total")
    if not weights:
        raise BillingError("INVALID", "cannot allocate without weights")
    if any(not weight.is_finite() or weight <= 0 for weight in weights):
        raise BillingError("INVALID", "weights must be positive")
    # Integer weights on a common scale make every share an exact fraction.
    scale = max(decimal_places(weight) for weight in weights)
    units = [int(weight.scaleb(scale, EXACT)) for weight in weights]
    whole = sum(units)
    shares = [divmod(total * unit, whole) for unit in units]
    parts = [floor for floor, _ in shares]
    leftover = total - sum(parts)
    by_remainder = sorted(range(len(shares)), key=lambda i: (-shares[i][1], i))
    for i in by_remainder[:leftover]:
        parts[i] += 1
    return parts

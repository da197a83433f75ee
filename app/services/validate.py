"""Checks of plain input values shared by the use-cases; each failure names its field path."""

from app.billing.money import BillingError, currency_exponent
from app.errors import DomainError, Problem
from app.services import text


def name(value: str, *path: str) -> str:
    """A display name: a text of its kind (text.NAME) as sent, then trimmed of the whitespace
    around it, the one change made to it."""
    return text.check(value, text.NAME, *path).strip()


def reference(value: str | None, *path: str) -> str | None:
    """An external reference: optional, a text of its kind (text.REFERENCE), kept as sent."""
    return None if value is None else text.check(value, text.REFERENCE, *path)


def currency(code: str, *path: str) -> str:
    """An ISO 4217 code with minor units."""
    text.check(code, text.CURRENCY, *path)
    try:
        currency_exponent(code)
    except BillingError as error:
        raise DomainError.of("INVALID_CURRENCY", str(error), *path) from None
    return code


def collect(*checks) -> None:
    """Run every check (zero-argument callables) and raise one DomainError with all problems."""
    problems: list[Problem] = []
    for check in checks:
        try:
            check()
        except DomainError as error:
            problems.extend(error.problems)
    if problems:
        raise DomainError(*problems)


def one_of(value: str, allowed: tuple[str, ...], *path: str) -> str:
    if value not in allowed:
        raise DomainError.of("INVALID", f"must be {' or '.join(allowed)}", *path)
    return value

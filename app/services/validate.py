"""Checks of plain input values shared by the use-cases; each failure names its field path."""

from app.billing.money import BillingError, currency_exponent
from app.errors import DomainError, Problem

NAME_MAX = 200
REF_MAX = 200


def name(value: str, *path: str) -> str:
    """A display name: trimmed, 1 to 200 characters, no control characters."""
    cleaned = (value or "").strip()
    if not cleaned:
        raise DomainError.of("INVALID", "must not be empty", *path)
    if len(cleaned) > NAME_MAX:
        raise DomainError.of("INVALID", f"must be at most {NAME_MAX} characters", *path)
    if any(ord(c) < 32 for c in cleaned):
        raise DomainError.of("INVALID", "must not contain control characters", *path)
    return cleaned


def reference(value: str | None, *path: str) -> str | None:
    """An external reference: optional, 1 to 200 printable characters."""
    if value is None:
        return None
    if not value.strip() or len(value) > REF_MAX or any(ord(c) < 32 for c in value):
        raise DomainError.of("INVALID", f"must be 1 to {REF_MAX} printable characters", *path)
    return value


def currency(code: str, *path: str) -> str:
    """An ISO 4217 code with minor units."""
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

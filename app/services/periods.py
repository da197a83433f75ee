"""Periods as the use-cases need them: which one is current, which are closed, which may change."""

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.billing.periods import PeriodError, next_period, parse_period, period_of
from app.errors import DomainError
from app.services import text
from models import ClosedPeriod, Network


def current_period(network: Network, now: datetime) -> str:
    return period_of(now, network.time_zone)


def parse_key(key: str, *path: str) -> str:
    """A period key as a request names it; DomainError with `path` otherwise."""
    text.check(key, text.PERIOD, *path)
    try:
        parse_period(key)
    except PeriodError as error:
        raise DomainError.of(error.code, str(error), *path) from None
    return key


def resolve(network: Network, key: str | None, now: datetime, *path: str) -> str:
    """The period a request names, the current one when it names none."""
    if key is None:
        return current_period(network, now)
    return parse_key(key, *path)


async def is_closed(session: AsyncSession, network_id: int, key: str) -> bool:
    found = await session.scalar(
        select(ClosedPeriod.key).where(ClosedPeriod.network_id == network_id, ClosedPeriod.key == key)
    )
    return found is not None


async def require_changeable(session: AsyncSession, network: Network, key: str, *path: str) -> None:
    """A period from which terms may take effect: not before the first period, not closed."""
    if key < network.first_period:
        raise DomainError.of(
            "BEFORE_FIRST_PERIOD", f"{key} lies before the network's first period {network.first_period}", *path
        )
    if await is_closed(session, network.id, key):
        raise DomainError.of("PERIOD_CLOSED", f"period {key} is closed", *path)


def span(first: str, last: str) -> list[str]:
    """Every period key from first to last, both included."""
    keys = []
    key = first
    while key <= last:
        keys.append(key)
        key = next_period(key)
    return keys


async def closed_keys(session: AsyncSession, network_id: int) -> set[str]:
    return set(await session.scalars(select(ClosedPeriod.key).where(ClosedPeriod.network_id == network_id)))

"""Keyset pagination on ascending ids: a cursor names the last id seen, so pages never shift."""

import base64
from dataclasses import dataclass

from sqlalchemy import Select
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import DomainError
from app.runtime import Runtime
from app.services import text


@dataclass(frozen=True)
class Page:
    rows: list
    has_next: bool
    has_previous: bool


def encode_cursor(row_id: int) -> str:
    return base64.b64encode(f"cursor:{row_id}".encode()).decode()


def decode_cursor(cursor: str) -> int:
    if text.problem(cursor, text.GLOBAL_ID) is None:
        try:
            kind, _, value = base64.b64decode(cursor.encode(), validate=True).decode().partition(":")
            if kind == "cursor" and value.isdigit() and len(value) <= 18:
                return int(value)
        except ValueError:
            pass
    raise DomainError.of("INVALID_CURSOR", "not a cursor of this connection", "after")


def page_size(rt: Runtime, first: int | None) -> int:
    limit = rt.settings.max_page_size
    if first is None:
        return limit
    if first < 0 or first > limit:
        raise DomainError.of("INVALID", f"first must lie between 0 and {limit}", "first")
    return first


async def paginate(session: AsyncSession, rt: Runtime, stmt: Select, id_column, first: int | None, after: str | None) -> Page:
    size = page_size(rt, first)
    if after is not None:
        stmt = stmt.where(id_column > decode_cursor(after))
    rows = list(await session.scalars(stmt.order_by(id_column).limit(size + 1)))
    return Page(rows[:size], len(rows) > size, after is not None)

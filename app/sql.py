"""Dialect-aware statements that SQLAlchemy spells differently for SQLite and PostgreSQL."""

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession


def upsert(session: AsyncSession, model):
    """An INSERT that takes ON CONFLICT clauses (both dialects spell them the same way)."""
    if session.bind.dialect.name == "postgresql":
        return postgresql.insert(model)
    return sqlite.insert(model)

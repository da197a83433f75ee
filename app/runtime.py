"""What a running process holds once: settings, the database, the key cache, the clock."""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.auth import KeyCache
from app.db import create_engine, session_factory
from app.settings import Settings
from models.types import utcnow


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    keys: KeyCache
    clock: Callable[[], datetime] = field(default=utcnow)
    "The time; tests put a fixed one in to close periods whose month has ended."

    @classmethod
    def from_settings(cls, settings: Settings) -> "Runtime":
        engine = create_engine(settings.database_url)
        return cls(settings, engine, session_factory(engine), KeyCache(settings.auth_cache_seconds))

    def now(self) -> datetime:
        return self.clock()

    async def close(self) -> None:
        await self.engine.dispose()

"""What a running process holds once: settings, the database, the key cache, pub/sub, the clock."""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.auth import KeyCache
from app.db import create_engine, session_factory
from app.observability import OperationLabels
from app.pubsub import InProcessPubSub, PubSub, create_pubsub
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
    pubsub: PubSub = field(default_factory=InProcessPubSub)
    "What changed, from the use-cases to the live subscriptions: in-process, or Redis when configured."
    operation_labels: OperationLabels = field(default_factory=OperationLabels, init=False)
    "The operation names the metrics keep apart."

    @classmethod
    def from_settings(cls, settings: Settings) -> "Runtime":
        engine = create_engine(settings.database_url)
        return cls(
            settings, engine, session_factory(engine), KeyCache(settings.auth_cache_seconds),
            pubsub=create_pubsub(settings.redis_url),
        )

    def now(self) -> datetime:
        return self.clock()

    async def close(self) -> None:
        await self.pubsub.close()
        await self.engine.dispose()

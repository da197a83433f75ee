"""Settings from the environment (SHAREFLOW_*), read once per process."""

from functools import lru_cache

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SHAREFLOW_", extra="ignore")

    database_url: str = "sqlite+aiosqlite:///./shareflow.db"
    "sqlite+aiosqlite:///path.db, or postgresql+asyncpg://user@host/db for scale-out."
    operator_key: str | None = None
    "The deployment's operator key: the only key that may call createNetwork."
    redis_url: str | None = None
    "Redis for pub/sub and shared rate limits across gateway processes; in-process when unset."
    allowed_origins: list[str] = []
    "Browser origins allowed to open the WebSocket from another site."
    ws_compression: bool = False
    "permessage-deflate on WebSockets: settlement messages are a few hundred bytes, which compressing barely shrinks while it costs CPU per message and a compressor per socket."
    max_page_size: int = 100
    "The cap on `first` for every connection."
    future_tolerance_seconds: int = 300
    "How far in the future an event's occurredAt may lie (clock skew of integrators)."
    max_body_bytes: int = 4 * 1024 * 1024
    "The largest request body accepted (413 LIMIT_EXCEEDED above): a recordUsage batch of 5,000 events with 200-character keys, pretty-printed, is about 3.2 MB."
    rate_limit_per_minute: int = 6000
    "Requests a minute per API key (a token bucket that bursts up to a minute's worth), shared through Redis when redis_url is set; 0 turns the limit off."
    trusted_proxies: list[str] = []
    "Addresses or networks (CIDR) of the proxies in front of the gateway: from these peers the client address, which a request without a valid key is rate-limited by, is taken from X-Forwarded-For."
    json_logs: bool = True
    "Log one JSON object a line, with the request id, when serving (set false for plain text)."
    log_level: str = "INFO"
    engine_overrides: bool = True
    "The overrides of strawberry's and graphql-core's internals in graph/engine/ (on/off, true/false); off, the GraphQL engine is plain strawberry."
    auth_cache_seconds: float = 2.0
    "How long a process trusts a verified key, with its party and network rows, before asking the database again."


@lru_cache
def get_settings() -> Settings:
    return Settings()

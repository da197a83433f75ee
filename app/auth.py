"""API keys: `sf_<prefix>_<secret>`, stored as the prefix plus a SHA-256 of the whole key."""

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from models import ApiKey, Party

KEY_PREFIX = "sf_"


@dataclass(frozen=True)
class Principal:
    """Who is calling: a party's key, or the deployment's operator (no network)."""

    network_id: int | None
    party_id: int | None
    kind: str
    key_id: int | None = None

    @property
    def is_operator(self) -> bool:
        return self.kind == "OPERATOR"

    @property
    def is_owner(self) -> bool:
        return self.kind == "OWNER"


OPERATOR = Principal(network_id=None, party_id=None, kind="OPERATOR")


def new_key() -> tuple[str, str, str]:
    """A fresh key with 256 random bits: (key, prefix, hash). The key is shown once, never stored."""
    prefix = secrets.token_hex(6)
    key = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    return key, prefix, hash_key(key)


def hash_key(key: str) -> str:
    # The key is high-entropy, so a fast hash is enough; a slow KDF would only slow every request.
    return hashlib.sha256(key.encode()).hexdigest()


def split_key(key: str) -> str | None:
    """The prefix of a well-formed key, or None."""
    if not key.startswith(KEY_PREFIX) or len(key) > 200:
        return None
    prefix, sep, secret = key[len(KEY_PREFIX) :].partition("_")
    if not sep or not secret or len(prefix) != 12:
        return None
    return prefix


class KeyCache:
    """Verified keys for a few seconds, so a request does not always pay a database round-trip.

    A key revoked through this process is forgotten at once; through another, after `ttl` seconds.
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[float, Principal]] = {}

    def get(self, key_hash: str) -> Principal | None:
        entry = self._entries.get(key_hash)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, key_hash: str, principal: Principal) -> None:
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[key_hash] = (time.monotonic() + self.ttl, principal)

    def forget_key(self, key_id: int) -> None:
        for key_hash, (_, principal) in list(self._entries.items()):
            if principal.key_id == key_id:
                del self._entries[key_hash]


async def authenticate(
    session: AsyncSession, authorization: str | None, operator_key: str | None, cache: KeyCache
) -> Principal | None:
    """The principal behind an `Authorization: Bearer ...` value; None if missing, unknown or revoked."""
    if not authorization:
        return None
    scheme, _, key = authorization.strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        return None
    if operator_key and hmac.compare_digest(key.encode(), operator_key.encode()):
        return OPERATOR
    prefix = split_key(key)
    if prefix is None:
        return None
    key_hash = hash_key(key)
    cached = cache.get(key_hash)
    if cached is not None:
        return cached
    row = (
        await session.execute(
            select(ApiKey.id, ApiKey.key_hash, ApiKey.revoked_at, Party.id, Party.network_id, Party.kind, Party.active)
            .join(Party, Party.id == ApiKey.party_id)
            .where(ApiKey.prefix == prefix)
        )
    ).first()
    if row is None or row[2] is not None or not row[6] or not hmac.compare_digest(row[1], key_hash):
        return None
    principal = Principal(network_id=row[4], party_id=row[3], kind=row[5], key_id=row[0])
    cache.put(key_hash, principal)
    return principal

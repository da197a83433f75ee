"""API keys: `sf_<prefix>_<secret>`, stored as the prefix plus a SHA-256 of the whole key."""

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.services import text
from models import ApiKey, Network, Party

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


@dataclass(frozen=True)
class Caller:
    """A verified key as the cache keeps it: the principal with its party and network rows, so that
    `me` and the caller's own party and network are answered without a statement while it is fresh.
    The rows are shared by every request of the key: read them, never change them."""

    principal: Principal
    party: Party | None = None
    network: Network | None = None
    key_prefix: str | None = None
    "The key's public prefix: what log lines name a key by."
    memo: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    "What the API layer derives from the caller once per cache entry (dropped with it)."


OPERATOR_CALLER = Caller(OPERATOR)


class KeyCache:
    """Verified keys for `ttl` seconds, so a request does not always pay a database round-trip.

    A key revoked through this process is forgotten at once; through another, after `ttl` seconds
    (the same bound holds for a change of its party or network made elsewhere). `ttl` 0 turns it off.
    When an entry runs out, concurrent requests with that key share one verification.
    """

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[float, Caller]] = {}
        self._pending: dict[str, asyncio.Future] = {}
        self._generation = 0
        "Bumped by every forget: a verification that began before it must not fill the cache."

    def get(self, key_hash: str) -> Caller | None:
        entry = self._entries.get(key_hash)
        if entry is None:
            return None
        if entry[0] < time.monotonic():
            self._entries.pop(key_hash, None)
            return None
        return entry[1]

    def put(self, key_hash: str, caller: Caller, generation: int | None = None) -> None:
        if self.ttl <= 0 or (generation is not None and generation != self._generation):
            return
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[key_hash] = (time.monotonic() + self.ttl, caller)

    def forget_key(self, key_id: int) -> None:
        self._generation += 1
        self._pending.clear()  # requests from now on verify afresh
        for key_hash, (_, caller) in list(self._entries.items()):
            if caller.principal.key_id == key_id:
                del self._entries[key_hash]

    async def verify_once(self, key_hash: str, verify: Callable[[int], Awaitable["Caller | None"]]) -> "Caller | None":
        """`verify(generation)` for a key not in the cache, shared by the requests that want it at
        the same time (one request's cancellation does not cancel the others')."""
        pending = self._pending.get(key_hash)
        if pending is None:
            pending = asyncio.ensure_future(verify(self._generation))
            self._pending[key_hash] = pending

            def done(future: asyncio.Future) -> None:
                if self._pending.get(key_hash) is future:
                    del self._pending[key_hash]
                if not future.cancelled():
                    future.exception()  # retrieved: a failure is raised to the requests, not logged

            pending.add_done_callback(done)
        return await asyncio.shield(pending)


_MISS = object()


def _check(authorization: str | None, operator_key: str | None, cache: KeyCache | None):
    """What the header alone (and the cache, if given) says: a Caller, None (refused), or
    `(_MISS, prefix, key_hash)` when the database must be asked."""
    if not authorization:
        return None
    scheme, _, key = authorization.strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or text.problem(key, text.API_KEY) is not None:  # a socket's may be any JSON text
        return None
    if operator_key and hmac.compare_digest(key.encode(), operator_key.encode()):
        return OPERATOR_CALLER
    prefix = split_key(key)
    if prefix is None:
        return None
    key_hash = hash_key(key)
    cached = None if cache is None else cache.get(key_hash)
    if cached is not None:
        return cached
    return (_MISS, prefix, key_hash)


async def _verify(
    session: AsyncSession, prefix: str, key_hash: str, cache: KeyCache, generation: int | None = None
) -> Caller | None:
    row = (
        await session.execute(
            select(ApiKey.id, ApiKey.key_hash, ApiKey.revoked_at, Party, Network)
            .join(Party, Party.id == ApiKey.party_id)
            .join(Network, Network.id == Party.network_id)
            .where(ApiKey.prefix == prefix)
        )
    ).first()
    if row is None or row[2] is not None or not row[3].active or not hmac.compare_digest(row[1], key_hash):
        return None
    party, network = row[3], row[4]
    session.expunge(party)  # the rows outlive the session (in the cache)
    session.expunge(network)
    principal = Principal(network_id=party.network_id, party_id=party.id, kind=party.kind, key_id=row[0])
    caller = Caller(principal, party, network, prefix)
    cache.put(key_hash, caller, generation)
    return caller


async def identify(
    sessions: async_sessionmaker[AsyncSession],
    authorization: str | None,
    operator_key: str | None,
    cache: KeyCache,
    fresh: bool = False,
) -> Caller | None:
    """The caller behind an `Authorization: Bearer ...` value; None if missing, unknown or revoked.
    A session is opened only when the key is not in the cache, or, `fresh`, always: the database's
    answer from now (which refreshes the cache)."""
    checked = _check(authorization, operator_key, None if fresh else cache)
    if type(checked) is not tuple:
        return checked
    _, prefix, key_hash = checked
    if fresh:  # not shared with a verification that began earlier
        generation = cache._generation
        async with sessions() as session:
            return await _verify(session, prefix, key_hash, cache, generation)

    async def verify(generation: int) -> Caller | None:
        async with sessions() as session:
            return await _verify(session, prefix, key_hash, cache, generation)

    return await cache.verify_once(key_hash, verify)


async def authenticate(
    session: AsyncSession, authorization: str | None, operator_key: str | None, cache: KeyCache
) -> Principal | None:
    """The principal behind an `Authorization: Bearer ...` value; None if missing, unknown or revoked."""
    checked = _check(authorization, operator_key, cache)
    if type(checked) is tuple:
        checked = await _verify(session, checked[1], checked[2], cache)
    return None if checked is None else checked.principal

"""Issuing and revoking a party's API keys."""

from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import Principal, new_key
from app.sqlite import write_turn
from app.errors import DomainError, not_found
from app.runtime import Runtime
from app.services import events
from app.services.access import sees_keys_of
from models import ApiKey, Party
from models.types import utcnow


@dataclass(frozen=True)
class IssuedKey:
    key: ApiKey
    secret: str


def may_manage_keys(principal: Principal, party: Party) -> bool:
    """The owner manages every key of its network; any other party only its own."""
    return sees_keys_of(principal, party) and party.kind != "CONSUMER"


async def minted(session: AsyncSession, principal: Principal, party: Party) -> IssuedKey:
    """A new key for the party (to be added to the session), recording the key that issued it: the
    revocation of that one revokes this one too. The issuing key must still work in this very
    transaction (its row locked until the end): a request that passed authentication just before
    its key was revoked, or through another process's key cache, would otherwise leave a working
    successor that no revocation reaches."""
    if principal.key_id is not None:
        revoked = (await session.execute(
            select(ApiKey.revoked_at).where(ApiKey.id == principal.key_id).with_for_update()
        )).first()
        if revoked is None or revoked[0] is not None:
            raise DomainError.of("UNAUTHENTICATED", "the key that would issue this one was revoked")
    secret, prefix, key_hash = new_key()
    key = ApiKey(
        network_id=party.network_id, party_id=party.id, prefix=prefix, key_hash=key_hash, issued_by_key_id=principal.key_id
    )
    return IssuedKey(key, secret)


async def issue_api_key(rt: Runtime, principal: Principal, party_id: int) -> IssuedKey:
    async with rt.sessions() as session, write_turn(session):
        party = await session.get(Party, party_id)
        if party is None or not may_manage_keys(principal, party):
            raise not_found("party", "partyId")
        issued = await minted(session, principal, party)
        session.add(issued.key)
        await session.commit()
    return issued


async def revoke_api_key(rt: Runtime, principal: Principal, key_id: int) -> ApiKey:
    """Revoking is final, and takes with it every key issued with this one, down the line, in the
    same transaction: a stolen key leaves no successor behind. Each stops working at once in this
    process, and the sockets opened with any of them close in every process (events.keys_invalidated)."""
    async with rt.sessions.begin() as session:
        row = (
            await session.execute(
                select(ApiKey, Party).join(Party, Party.id == ApiKey.party_id).where(
                    ApiKey.id == key_id, ApiKey.network_id == principal.network_id
                )
            )
        ).first()
        if row is None or not may_manage_keys(principal, row[1]):
            raise not_found("API key", "id")
        key = row[0]
        if key.revoked_at is not None:
            raise DomainError.of("ALREADY_REVOKED", "the key was revoked already", "id")
        key.revoked_at = utcnow()
        successors = await _revoke_issued_by(session, key)
    await events.keys_invalidated(rt, [(key.id, key.prefix), *successors])
    return key


async def _revoke_issued_by(session: AsyncSession, key: ApiKey) -> list[tuple[int, str]]:
    """Revokes, as `key` was, the keys issued with it and with those, down the line, that still
    work: their (id, prefix)."""
    network_id = key.network_id
    issued = (
        select(ApiKey.id).where(ApiKey.network_id == network_id, ApiKey.issued_by_key_id == key.id)
        .cte("issued", recursive=True)
    )
    issued = issued.union(
        select(ApiKey.id).join(issued, ApiKey.issued_by_key_id == issued.c.id).where(ApiKey.network_id == network_id)
    )
    revoked = await session.execute(
        update(ApiKey)
        .where(ApiKey.network_id == network_id, ApiKey.id.in_(select(issued.c.id)), ApiKey.revoked_at.is_(None))
        .values(revoked_at=key.revoked_at)
        .returning(ApiKey.id, ApiKey.prefix)
        .execution_options(synchronize_session=False)
    )
    return [(key_id, prefix) for key_id, prefix in revoked]

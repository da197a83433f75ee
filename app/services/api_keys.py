"""Issuing and revoking a party's API keys."""

from dataclasses import dataclass

from sqlalchemy import select

from app.auth import Principal, new_key
from app.errors import DomainError, not_found
from app.runtime import Runtime
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


async def issue_api_key(rt: Runtime, principal: Principal, party_id: int) -> IssuedKey:
    async with rt.sessions.begin() as session:
        party = await session.get(Party, party_id)
        if party is None or not may_manage_keys(principal, party):
            raise not_found("party", "partyId")
        secret, prefix, key_hash = new_key()
        key = ApiKey(network_id=party.network_id, party_id=party.id, prefix=prefix, key_hash=key_hash)
        session.add(key)
    return IssuedKey(key, secret)


async def revoke_api_key(rt: Runtime, principal: Principal, key_id: int) -> ApiKey:
    """Revoking is final; the key stops working at once in this process, within seconds elsewhere."""
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
    rt.keys.forget_key(key_id)
    return key

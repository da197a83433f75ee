from datetime import datetime

from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from models.types import Id, UTCDateTime, utcnow


class ApiKey(SQLModel, table=True):
    """A party's key: only the visible prefix and a hash of the whole key are kept."""

    __tablename__ = "api_keys"
    __table_args__ = (
        Index("ix_api_keys_network_party", "network_id", "party_id"),
        Index("ix_api_keys_issued_by", "network_id", "issued_by_key_id"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=Id)
    network_id: int = Field(foreign_key="networks.id", sa_type=Id)
    party_id: int = Field(foreign_key="parties.id", sa_type=Id)
    prefix: str = Field(max_length=32, unique=True)
    key_hash: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    issued_by_key_id: int | None = Field(default=None, foreign_key="api_keys.id", sa_type=Id)
    "The key that issued this one, whose revocation revokes it too; None when the operator key did."

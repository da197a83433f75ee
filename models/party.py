from datetime import datetime

from sqlalchemy import Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from models.types import Id, UTCDateTime, utcnow


class Party(SQLModel, table=True):
    """A node of the value chain: the owner, a provider, a partner or a consumer."""

    __tablename__ = "parties"
    __table_args__ = (
        # A consumer reference is unique per merchant of record (DESIGN §2).
        UniqueConstraint("network_id", "billing_party_id", "external_ref", name="uq_parties_consumer_ref"),
        Index("ix_parties_network_kind", "network_id", "kind", "id"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=Id)
    network_id: int = Field(foreign_key="networks.id", sa_type=Id)
    kind: str = Field(max_length=16)
    name: str = Field(max_length=200)
    external_ref: str | None = Field(default=None, max_length=200)
    billing_party_id: int | None = Field(default=None, foreign_key="parties.id", sa_type=Id)
    "For consumers: the merchant of record whose customer this is."
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)

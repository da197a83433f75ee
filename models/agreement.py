from datetime import datetime
from decimal import Decimal

from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from models.types import ExactDecimal, Id, UTCDateTime, utcnow


class Agreement(SQLModel, table=True):
    """An edge of the value chain: out of the payer's income from a service, the payee gets its rule."""

    __tablename__ = "agreements"
    __table_args__ = (
        Index("ix_agreements_service", "network_id", "service_id", "effective_from"),
        Index("ix_agreements_payer", "network_id", "payer_id"),
        Index("ix_agreements_payee", "network_id", "payee_id"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=Id)
    network_id: int = Field(foreign_key="networks.id", sa_type=Id)
    service_id: int = Field(foreign_key="services.id", sa_type=Id)
    payer_id: int = Field(foreign_key="parties.id", sa_type=Id)
    payee_id: int = Field(foreign_key="parties.id", sa_type=Id)
    kind: str = Field(max_length=16)
    percent: Decimal | None = Field(default=None, sa_type=ExactDecimal)
    amount: Decimal | None = Field(default=None, sa_type=ExactDecimal)
    metric: str | None = Field(default=None, max_length=64)
    base: str | None = Field(default=None, max_length=16)
    weight: Decimal | None = Field(default=None, sa_type=ExactDecimal)
    priority: int = 100
    min: Decimal | None = Field(default=None, sa_type=ExactDecimal)
    max: Decimal | None = Field(default=None, sa_type=ExactDecimal)
    effective_from: str = Field(max_length=7)
    effective_to: str | None = Field(default=None, max_length=7)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)

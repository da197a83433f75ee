from datetime import datetime

from sqlalchemy import JSON, Index
from sqlmodel import Field, SQLModel

from models.types import Id, UTCDateTime, utcnow


class Service(SQLModel, table=True):
    """What consumers buy: delivered by a provider, billed by a merchant of record."""

    __tablename__ = "services"
    __table_args__ = (Index("ix_services_network", "network_id", "id"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=Id)
    network_id: int = Field(foreign_key="networks.id", sa_type=Id)
    name: str = Field(max_length=200)
    currency: str = Field(max_length=3)
    provider_id: int = Field(foreign_key="parties.id", sa_type=Id)
    billed_by_id: int = Field(foreign_key="parties.id", sa_type=Id)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class PricePlan(SQLModel, table=True):
    """One version of a service's charges, in force for [effective_from, effective_to) periods.

    Charges are kept as JSON with decimals as strings: they are read whole, never summed in SQL.
    """

    __tablename__ = "price_plans"
    __table_args__ = (Index("ix_price_plans_service", "network_id", "service_id", "effective_from"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=Id)
    network_id: int = Field(foreign_key="networks.id", sa_type=Id)
    service_id: int = Field(foreign_key="services.id", sa_type=Id)
    effective_from: str = Field(max_length=7)
    effective_to: str | None = Field(default=None, max_length=7)
    charges: list = Field(sa_type=JSON)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)

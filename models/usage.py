from datetime import datetime

from sqlalchemy import BigInteger, Column, Computed, Index, PrimaryKeyConstraint, UniqueConstraint
from sqlmodel import Field, SQLModel

from models.types import Id, UTCDateTime, utcnow

EVENT_BLOCK = 16_384
"""Events per block of ids (UsageEvent.id_block). The index by consumer leads with the block, so
that a batch's events land on the few pages of the newest block instead of one page per consumer
all over the index: with a million events in a period, a batch of 1,000 wrote some 600 pages of
that index at its commit, and SQLite's writes grew with the period."""


class UsageEvent(SQLModel, table=True):
    """A consumer used a service. Quantities are integer millionths; the key decides duplicates,
    within its service (DESIGN §2: two providers' keys never collide)."""

    __tablename__ = "usage_events"
    __table_args__ = (
        # Unique per service; led by (network, key), it serves the look-ups by key as well.
        UniqueConstraint("network_id", "idempotency_key", "service_id", name="uq_usage_events_service_key"),
        Index("ix_usage_events_service", "network_id", "service_id", "period", "id"),
        Index("ix_usage_events_consumer", "network_id", "id_block", "consumer_id", "id"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=Id)
    network_id: int = Field(foreign_key="networks.id", sa_type=Id)
    service_id: int = Field(foreign_key="services.id", sa_type=Id)
    consumer_id: int = Field(foreign_key="parties.id", sa_type=Id)
    idempotency_key: str = Field(max_length=200)
    metric: str = Field(max_length=64)
    quantity: int = Field(sa_type=BigInteger)
    occurred_at: datetime = Field(sa_type=UTCDateTime)
    period: str = Field(max_length=7)
    recorded_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    voided_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    id_block: int | None = Field(
        default=None, sa_column=Column("id_block", BigInteger, Computed(f"id / {EVENT_BLOCK}", persisted=True))
    )
    "The event's block of ids (EVENT_BLOCK), computed by the database."


class ConsumerBlock(SQLModel, table=True):
    """A block of event ids that holds events of this consumer: where the index by consumer is
    searched for them (usageEvents by consumer), block after block in the order of the ids."""

    __tablename__ = "consumer_blocks"
    __table_args__ = (PrimaryKeyConstraint("network_id", "consumer_id", "id_block"), {"sqlite_with_rowid": False})

    network_id: int = Field(sa_type=Id)
    consumer_id: int = Field(sa_type=Id)
    id_block: int = Field(sa_type=BigInteger)


class UsageLine(SQLModel, table=True):
    """Running totals of one consumer's charge line (period, service, metric) and its price.

    Integers only: quantities in millionths, the amount in minor units, rounded once from the
    exact model amount each time the totals change.
    """

    __tablename__ = "usage_lines"
    __table_args__ = (PrimaryKeyConstraint("network_id", "period", "service_id", "consumer_id", "metric"),)

    network_id: int = Field(sa_type=Id)
    period: str = Field(max_length=7)
    service_id: int = Field(sa_type=Id)
    consumer_id: int = Field(sa_type=Id)
    metric: str = Field(max_length=64)
    events: int = Field(default=0, sa_type=BigInteger)
    quantity: int = Field(default=0, sa_type=BigInteger)
    min_events: int = Field(default=0, sa_type=BigInteger)
    max_events: int = Field(default=0, sa_type=BigInteger)
    mid_events: int = Field(default=0, sa_type=BigInteger)
    mid_quantity: int = Field(default=0, sa_type=BigInteger)
    amount: int = Field(default=0, sa_type=BigInteger)


class ServiceUsage(SQLModel, table=True):
    """A service's usage of one metric in a period, all consumers: what PER_UNIT and PER_EVENT legs read."""

    __tablename__ = "service_usage"
    __table_args__ = (PrimaryKeyConstraint("network_id", "period", "service_id", "metric"),)

    network_id: int = Field(sa_type=Id)
    period: str = Field(max_length=7)
    service_id: int = Field(sa_type=Id)
    metric: str = Field(max_length=64)
    events: int = Field(default=0, sa_type=BigInteger)
    quantity: int = Field(default=0, sa_type=BigInteger)


class ServiceRevenue(SQLModel, table=True):
    """What consumers pay for a service in a period (the root pool), in minor units."""

    __tablename__ = "service_revenue"
    __table_args__ = (PrimaryKeyConstraint("network_id", "period", "service_id"),)

    network_id: int = Field(sa_type=Id)
    period: str = Field(max_length=7)
    service_id: int = Field(sa_type=Id)
    amount: int = Field(default=0, sa_type=BigInteger)

from datetime import datetime

from sqlalchemy import BigInteger, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from models.types import Id, UTCDateTime, utcnow


class LedgerEntry(SQLModel, table=True):
    """A booked flow: a debit of the payer and a credit of the payee, in minor units.

    Closing a period books its flows (origin = booked period); a correction of a closed period
    books the signed difference into the oldest open period as an adjustment naming its origin.
    Consumers' payments are booked per consumer.
    """

    __tablename__ = "ledger_entries"
    __table_args__ = (
        Index("ix_ledger_booked", "network_id", "booked_period", "service_id"),
        Index("ix_ledger_origin", "network_id", "origin_period", "service_id"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=Id)
    network_id: int = Field(foreign_key="networks.id", sa_type=Id)
    booked_period: str = Field(max_length=7)
    origin_period: str = Field(max_length=7)
    adjustment: bool = False
    service_id: int = Field(foreign_key="services.id", sa_type=Id)
    payer_id: int = Field(foreign_key="parties.id", sa_type=Id)
    payee_id: int = Field(foreign_key="parties.id", sa_type=Id)
    currency: str = Field(max_length=3)
    amount: int = Field(sa_type=BigInteger)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class FinalStatement(SQLModel, table=True):
    """A party's statement of a closed period: never changed after the close that wrote it."""

    __tablename__ = "statements"
    __table_args__ = (
        UniqueConstraint("network_id", "period", "seq", name="uq_statements_number"),
        UniqueConstraint("network_id", "party_id", "period", "currency", name="uq_statements_party"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=Id)
    network_id: int = Field(foreign_key="networks.id", sa_type=Id)
    party_id: int = Field(foreign_key="parties.id", sa_type=Id)
    period: str = Field(max_length=7)
    currency: str = Field(max_length=3)
    seq: int = Field(sa_type=BigInteger)
    number: str = Field(max_length=32)
    receivable: int = Field(sa_type=BigInteger)
    payable: int = Field(sa_type=BigInteger)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class FinalStatementLine(SQLModel, table=True):
    __tablename__ = "statement_lines"
    __table_args__ = (Index("ix_statement_lines_statement", "network_id", "statement_id"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=Id)
    network_id: int = Field(foreign_key="networks.id", sa_type=Id)
    statement_id: int = Field(foreign_key="statements.id", sa_type=Id)
    counterparty_id: int | None = Field(default=None, foreign_key="parties.id", sa_type=Id)
    service_id: int = Field(foreign_key="services.id", sa_type=Id)
    direction: str = Field(max_length=3)
    amount: int = Field(sa_type=BigInteger)
    adjustment: bool = False
    origin_period: str | None = Field(default=None, max_length=7)


class FinalStatementCharge(SQLModel, table=True):
    """A consumer's invoice line, frozen with its statement."""

    __tablename__ = "statement_charges"
    __table_args__ = (Index("ix_statement_charges_statement", "network_id", "statement_id"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=Id)
    network_id: int = Field(foreign_key="networks.id", sa_type=Id)
    statement_id: int = Field(foreign_key="statements.id", sa_type=Id)
    service_id: int = Field(foreign_key="services.id", sa_type=Id)
    metric: str = Field(max_length=64)
    quantity: int = Field(sa_type=BigInteger)
    events: int = Field(sa_type=BigInteger)
    amount: int = Field(sa_type=BigInteger)

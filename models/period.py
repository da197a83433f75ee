from datetime import datetime

from sqlalchemy import PrimaryKeyConstraint
from sqlmodel import Field, SQLModel

from models.types import Id, UTCDateTime


class ClosedPeriod(SQLModel, table=True):
    """A settlement period that was closed: its figures are final. Open periods have no row."""

    __tablename__ = "closed_periods"
    __table_args__ = (PrimaryKeyConstraint("network_id", "key"),)

    network_id: int = Field(foreign_key="networks.id", sa_type=Id)
    key: str = Field(max_length=7)
    closed_at: datetime = Field(sa_type=UTCDateTime)

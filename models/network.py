from datetime import datetime

from sqlmodel import Field, SQLModel

from models.types import Id, UTCDateTime, utcnow


class Network(SQLModel, table=True):
    """One owner's platform: the tenant every other row belongs to."""

    __tablename__ = "networks"

    id: int | None = Field(default=None, primary_key=True, sa_type=Id)
    name: str = Field(max_length=200)
    currency: str = Field(max_length=3)
    rounding_mode: str = Field(max_length=16)
    time_zone: str = Field(max_length=64)
    first_period: str = Field(max_length=7)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)

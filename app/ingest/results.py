"""What a batch hands back: each item's outcome, and the events it stored or found, as rows
without ORM state."""

from collections import Counter, namedtuple
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

from app.errors import Problem

STATUSES = ("ACCEPTED", "DUPLICATE", "REJECTED")
"An item's outcome."


@dataclass(slots=True)
class StoredEvent:
    """A usage event as stored (the columns of usage_events), without ORM state: what a batch
    hands back for its accepted and duplicate items."""

    id: int
    network_id: int
    service_id: int
    consumer_id: int
    idempotency_key: str
    metric: str
    quantity: int
    occurred_at: datetime
    period: str
    recorded_at: datetime
    voided_at: datetime | None = None

    def event(self) -> "StoredEvent":
        """Itself: what ItemResult.event asks of a StoredEvent and a NewEvent alike."""
        return self


NEW_EVENT = ("network_id", "service_id", "consumer_id", "idempotency_key", "metric", "quantity", "occurred_at", "period", "recorded_at")
"The columns a new event is inserted with."


class NewEvent(namedtuple("NewEventRow", ("id", *NEW_EVENT))):
    """An event as a batch inserted it: its id and the row it was written with (NEW_EVENT),
    times as bound. A batch of the import accepts thousands and hands back none, so the
    StoredEvent an answer shows is made only when asked for (ItemResult.event)."""

    __slots__ = ()

    def event(self) -> StoredEvent:
        return StoredEvent(*self[:7], time_of(self.occurred_at), self.period, time_of(self.recorded_at))


new_event = partial(tuple.__new__, NewEvent)
"NewEvent from a tuple of its fields, without NamedTuple's own constructor (a Python function)."


def time_of(bound: datetime | str) -> datetime:
    """A time bound by bind_time, as the aware UTC datetime it binds."""
    return bound if isinstance(bound, datetime) else datetime.fromisoformat(bound).replace(tzinfo=UTC)


@dataclass(slots=True)
class ItemResult:
    status: str
    "ACCEPTED, DUPLICATE or REJECTED."
    stored: NewEvent | StoredEvent | None = None
    "The event: as this batch inserted it (NewEvent) or as it was read (StoredEvent)."
    problems: Sequence[Problem] = ()

    @property
    def event(self) -> StoredEvent | None:
        return None if self.stored is None else self.stored.event()

    @property
    def event_id(self) -> int | None:
        return None if self.stored is None else self.stored.id


@dataclass(frozen=True)
class Recorded:
    results: list[ItemResult]

    def count(self, status: str) -> int:
        return self.counts()[status]

    def counts(self) -> dict[str, int]:
        """The results by status, every status counted (0 where none), in one pass."""
        counted = Counter(r.status for r in self.results)
        return {status: counted[status] for status in STATUSES}

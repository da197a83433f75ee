"""Recording and voiding usage: events in, running totals and repriced lines out, O(1) per event.

An accepted event is committed with its effect on the totals in one transaction: the consumer's
line (repriced with the plan of the event's period), the service's usage per metric, and the
service's revenue (the root pool), so that live flows and statements never rescan the events.
"""

import asyncio
import json
import weakref
from collections import Counter, defaultdict, namedtuple
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache, partial
from itertools import chain, count, repeat
from typing import NamedTuple

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.auth import Principal
from app.billing import running_totals
from app.billing.money import RoundingMode, currency_exponent
from app.billing.pricing import Charge
from app.billing.running_totals import Change
from app.db import write_turn
from app.errors import DomainError, FlowTooLarge, Problem, not_found
from app.runtime import Runtime
from app.services import catalog, events, periods, settlement, text
from app.services.access import may_record, recordable_services, visible_services
from app.services.usage_input import FIELDS, Prepared, Preparer, UsageItem, bind_time
from models import (ClosedPeriod, ConsumerBlock, Network, Party, PricePlan, Service, ServiceRevenue, ServiceUsage,
                    UsageEvent, UsageLine)
from models.usage import EVENT_BLOCK
from models.types import utcnow

MAX_BATCH = 5000
STATUSES = ("ACCEPTED", "DUPLICATE", "REJECTED")
"An item's outcome."

@dataclass(slots=True)
class ItemResult:
    status: str
    "ACCEPTED, DUPLICATE or REJECTED."
    stored: "NewEvent | StoredEvent | None" = None
    "The event: as this batch inserted it (NewEvent) or as it was read (StoredEvent)."
    problems: Sequence[Problem] = ()

    @property
    def event(self) -> "StoredEvent | None":
        stored = self.stored
        return stored.event() if type(stored) is NewEvent else stored

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


async def preparer_for(rt: Runtime, principal: Principal) -> Preparer:
    """A Preparer for the principal's network (whose time zone is set once, when it is created)."""
    async with rt.sessions() as session:
        network = await session.get(Network, principal.network_id)
    if network is None:
        raise not_found("network")
    return Preparer(network.time_zone, rt.engine.dialect.name)


_FIELD_ORDER = {name: position for position, name in enumerate(FIELDS)}


class BatchNetwork(NamedTuple):
    """The columns of a network that a batch reads (a Network row has them too)."""

    id: int
    time_zone: str
    first_period: str
    rounding_mode: str


class BatchService(NamedTuple):
    """The columns of a service that a batch reads (a Service row has them too)."""

    id: int
    network_id: int
    provider_id: int
    billed_by_id: int
    currency: str


class _Context:
    """What a batch needs to know about its network and services, read once per batch.

    Read through the driver, in as few turns as the reads allow (_fetch_all): a batch's context
    read through the ORM cost three or four turns of the database thread per statement, and
    every turn waits for this thread to be free of the other requests it is reading meanwhile."""

    def __init__(self, network: BatchNetwork | Network, services: dict[int, BatchService | Service]) -> None:
        self.network = network
        self.first_period = network.first_period
        self.services = services
        self.latest: object = None
        "The latest acceptable occurredAt, bound as Prepared.occurred_at is (set by a batch that records)."
        self.allowed: dict[int, bool] = {}
        "Per service of the batch: whether the batch's principal may record its usage."
        self.plans: dict[tuple[int, str], dict[str, Charge]] = {}
        self.charged: set[tuple[int, str, str]] = set()
        "(service, period, metric) of every charge in self.plans."
        self.closed: set[str] = set()

    async def load(self, connection: AsyncConnection, pairs: set[tuple[int, str]]) -> None:
        """The plans in force for these (service, period) pairs: one statement per period."""
        by_period: dict[str, list[int]] = defaultdict(list)
        for service_id, period in pairs - self.plans.keys():
            by_period[period].append(service_id)
        if not by_period:
            return
        statements = _statements(connection)
        asked = sorted(by_period.items())
        answers = await _fetch_all(connection, [
            (statements.in_list(statements.plans, len(ids)), (self.network.id, period, period, *sorted(ids)))
            for period, ids in asked
        ])
        for (period, ids), rows in zip(asked, answers):
            documents = {service_id: json.loads(charges) if isinstance(charges, str | bytes) else charges
                         for service_id, charges in rows}
            for service_id in ids:
                charges = self.plans[(service_id, period)] = {
                    c.metric: c for c in map(catalog.charge_from_json, documents.get(service_id, ()))
                }
                self.charged.update((service_id, period, metric) for metric in charges)

    def charge(self, service_id: int, period: str, metric: str) -> Charge | None:
        return self.plans.get((service_id, period), {}).get(metric)

    def usable(self, item: Prepared) -> bool:
        """No problem of its own, a service the principal may record, a time in an open range."""
        return (
            not item.problems
            and self.allowed.get(item.service_id) is True
            and item.occurred_at <= self.latest
            and item.period >= self.first_period
        )

    def problems(self, item: Prepared, index: int) -> list[Problem]:
        """Every problem of an item that is not usable, in the order of FIELDS."""
        problems = list(item.problems)
        allowed = self.allowed.get(item.service_id)
        if allowed is None:
            problems.append(Problem(("events", str(index), "serviceId"), "NOT_FOUND", "service not found"))
        elif not allowed:
            problems.append(Problem(("events", str(index), "serviceId"), "FORBIDDEN", "only the service's provider or the owner may record its usage"))
        if item.occurred_at is not None:
            if item.occurred_at > self.latest:
                problems.append(Problem(("events", str(index), "occurredAt"), "INVALID", "lies too far in the future"))
            elif item.period < self.first_period:
                problems.append(Problem(("events", str(index), "occurredAt"), "BEFORE_FIRST_PERIOD", f"lies before the first period {self.first_period}"))
        problems.sort(key=lambda problem: _FIELD_ORDER[problem.path[2]])
        return problems


def _same_payload(event: "StoredEvent", item: Prepared, consumer_ref: str, bind) -> bool:
    return (
        event.service_id == item.service_id
        and consumer_ref == item.consumer_ref
        and event.metric == item.metric
        and event.quantity == item.quantity
        and bind(event.occurred_at) == item.occurred_at
    )


async def record_usage(rt: Runtime, principal: Principal, items: list[UsageItem] | list[Prepared], *,
                       max_batch: int | None = MAX_BATCH) -> Recorded:
    """Record a batch; each item is accepted, a duplicate of an earlier event, or rejected with
    its problems. Accepted items are committed before this returns.

    The items are all UsageItems, or all Prepared by a Preparer for the principal's network and
    this database (the bulk import's reader), each with its index in the batch.

    `max_batch` is the API's limit; the bulk import lifts it (None) to pay a transaction's fixed
    costs, the commit's sync above all, once per many thousand events."""
    if max_batch is not None and len(items) > max_batch:
        raise DomainError.of("BATCH_TOO_LARGE", f"at most {max_batch} events per batch", "events")
    if rt.engine.dialect.name == "sqlite":
        return await _commit_group(rt).submit(rt, principal, items)
    async with rt.sessions() as session, write_turn(session):
        recorded, fresh = await _record(rt, session, principal, items)
        await session.commit()
    await events.usage_changed(rt, principal.network_id, fresh)
    return recorded


class _CommitGroup:
    """SQLite's batches, recorded together: the batches that arrive while one transaction is
    written go into the next, each in its own savepoint, and commit at once.

    SQLite writes one transaction at a time, and its commit writes every page the transaction
    touched to the WAL and syncs it. A batch's events land on one page per consumer of the index
    by consumer, so with a million events in the period a batch of 1,000 wrote some 600 pages;
    several batches share most of those pages and one sync. Each batch keeps its own outcome (a
    batch that fails, whatever the cause, fails alone: _record_group), and none is answered
    before the commit that holds it."""

    def __init__(self) -> None:
        self.waiting: list[tuple[Principal, list[UsageItem], asyncio.Future]] = []
        self.writer: asyncio.Task | None = None

    async def submit(self, rt: Runtime, principal: Principal, items: list[UsageItem]) -> Recorded:
        answer = asyncio.get_running_loop().create_future()
        self.waiting.append((principal, items, answer))
        if self.writer is None:
            self.writer = asyncio.create_task(self._write(rt))
        return await answer

    async def _write(self, rt: Runtime) -> None:
        try:
            while self.waiting:
                # A caller gone before its turn (its answer cancelled) has nothing written.
                group = [batch for batch in self.waiting if not batch[2].done()]
                self.waiting = []
                if group:
                    await _record_group(rt, group)
        finally:
            self.writer = None


_GROUPS: "weakref.WeakKeyDictionary[object, _CommitGroup]" = weakref.WeakKeyDictionary()


def _commit_group(rt: Runtime) -> _CommitGroup:
    group = _GROUPS.get(rt.engine.sync_engine)
    if group is None:
        group = _GROUPS[rt.engine.sync_engine] = _CommitGroup()
    return group


async def _record_group(rt: Runtime, group: list[tuple[Principal, list[UsageItem], asyncio.Future]]) -> None:
    """Record the batches in one transaction and answer each once it has committed.

    A batch's failure is its own, whatever its cause: a refusal (DomainError) or a fault (any
    other error, which its caller's door masks as INTERNAL and logs) is rolled back to the batch's
    savepoint and answers that batch alone; the other batches commit. A failure that took the
    transaction with it (_TransactionLost) leaves the other batches to be written again in a new
    one, a commit that fails each batch of it again alone (what only the commit finds, such as a
    deferred constraint, is then its own batch's failure): nothing of them was written. An error
    before any batch ran (the database unreachable or locked) is the answer of every batch."""
    outcomes: dict[int, Recorded | Exception] = {}
    rounds = [list(range(len(group)))]
    "The positions of the batches to record, one transaction each."
    try:
        while rounds:
            todo = rounds.pop(0)
            recorded: dict[int, tuple[Recorded, list]] = {}
            try:
                async with rt.sessions() as session, write_turn(session):
                    for position in todo:
                        principal, items, _ = group[position]
                        try:
                            recorded[position] = await _record(rt, session, principal, items)
                        except _TransactionLost as lost:
                            outcomes[position] = lost.error
                            raise
                        except Exception as error:
                            outcomes[position] = error
                            if not _clean(session):
                                raise _TransactionLost(error) from None
                    await session.commit()
            except _TransactionLost:
                left = [position for position in todo if position not in outcomes]
                rounds[:0] = [left] if left else []
                continue
            except Exception as error:
                if len(recorded) > 1:  # the commit failed: each batch it held, again alone
                    rounds[:0] = [[position] for position in recorded]
                else:
                    for position in todo:
                        outcomes.setdefault(position, error)
                continue
            for position, (result, fresh) in recorded.items():
                outcomes[position] = result
                await events.usage_changed(rt, group[position][0].network_id, fresh)
    except BaseException:
        for _, _, answer in group:
            if not answer.done():
                answer.cancel()
        raise
    for position, (_, _, answer) in enumerate(group):
        if answer.done():
            continue
        outcome = outcomes[position]
        if isinstance(outcome, Exception):
            answer.set_exception(outcome)
        else:
            answer.set_result(outcome)


class _TransactionLost(Exception):
    """A batch's failure (`error`) took its transaction with it: its savepoint could not be rolled
    back (SQLite ends the whole transaction on some errors), or ORM changes of the batch are left
    that the commit would write."""

    def __init__(self, error: Exception) -> None:
        super().__init__(f"the batch failed ({error!r}) and its transaction with it")
        self.error = error


def _clean(session: AsyncSession) -> bool:
    """Whether the session may still commit the other batches after one was rolled back to its savepoint."""
    transaction = session.get_transaction()
    return transaction is not None and transaction.is_active and not (session.new or session.dirty or session.deleted)


class _Overflow(DomainError):
    """Events that would each push a running total past MAX_TOTAL, or (FLOW_OVERFLOW) a closed
    period's corrected flows past the waterfall's limit: the batch is written again without them
    (see _record)."""

    def __init__(self, positions: list[int], code: str = "QUANTITY_OVERFLOW",
                 message: str = "a running total would leave the 64-bit range") -> None:
        super().__init__(Problem(("events",), code, message))
        self.positions = positions
        "Positions in the changes handed to _apply."

    def of_items(self, results: list) -> "_Overflow":
        """The same overflow with its positions among the fresh events (in item order) as item indices."""
        accepted = [index for index, result in enumerate(results) if result is not None and result.status == "ACCEPTED"]
        return _Overflow([accepted[position] for position in self.positions], self.code, self.problems[0].message)


async def _record(rt: Runtime, session: AsyncSession, principal: Principal, items: list) -> tuple[Recorded, list["NewEvent"]]:
    """One batch in the session's write transaction, in a savepoint: its outcome and the events it
    stored. The totals are summed per batch, so an event that would overflow one is found only
    once the batch's events are written; the batch is then rolled back to its savepoint and
    written again with those events rejected (a rare path).

    The savepoint is the driver's statement, on SQLite sent in the batch's first turn of reads
    (_record_once): SQLAlchemy's would cost two turns of their own, and the batch touches no ORM
    object that its rollback would have to expire (the corrections of closed periods flush
    theirs). asyncpg's transaction begins with SQLAlchemy's first statement: there the savepoint
    is sent through SQLAlchemy."""
    connection = await session.connection()
    statements = _statements(connection)
    overflowing: dict[int, ItemResult] = {}
    while True:
        opening = [(statements.savepoint_batch, ())]
        if connection.dialect.paramstyle != "qmark":
            await connection.exec_driver_sql(statements.savepoint_batch)
            opening = []
        try:
            outcome = await _record_once(rt, session, principal, items, overflowing, opening)
        except BaseException as error:
            try:
                await _fetch_all(connection, [(statements.rollback_batch, ()), (statements.release_batch, ())])
            except Exception as lost:
                if isinstance(error, Exception):
                    raise _TransactionLost(error) from lost
                raise error from lost
            if not isinstance(error, _Overflow):
                raise
            for index in error.positions:
                overflowing[index] = ItemResult("REJECTED", problems=[Problem(
                    ("events", str(index), "quantity"), error.code, error.problems[0].message)])
        else:
            await _fetch(connection, statements.release_batch, ())
            return outcome


async def _record_once(rt, session, principal, items, overflowing: dict[int, ItemResult],
                       opening: list[tuple[str, tuple]]) -> tuple[Recorded, list["NewEvent"]]:
    """_record's one attempt; the items of `overflowing` are rejected as given, and `opening`
    (the savepoint, where not opened yet) goes first in its first turn of reads."""
    results: list[ItemResult | None] = [None] * len(items)
    connection = await session.connection()
    statements = _statements(connection)
    network_id = principal.network_id
    service_ids = sorted({i.service_id for i in items if i.service_id is not None})
    reads = [*opening, (statements.network, (network_id,)), (statements.closed, (network_id,))]
    if service_ids:
        reads.append((statements.in_list(statements.services, len(service_ids)), (network_id, *service_ids)))
    network_rows, closed_rows, *service_rows = (await _fetch_all(connection, reads))[len(opening) :]
    if not network_rows:
        raise not_found("network")
    network = BatchNetwork(*network_rows[0])
    services = {row[0]: BatchService(*row) for rows in service_rows for row in rows}
    ctx = _Context(network, services)
    ctx.allowed = {service_id: may_record(principal, service) for service_id, service in services.items()}
    if not all(ctx.allowed.values()):
        await _forget_unseen(session, principal, ctx.allowed)
    ctx.closed = {key for (key,) in closed_rows}
    bind = statements.bind_time
    ctx.latest = bind(rt.now() + timedelta(seconds=rt.settings.future_tolerance_seconds))
    if items and type(items[0]) is UsageItem:
        preparer = Preparer(network.time_zone, connection.dialect.name)
        items = [preparer.prepare(item, index) for index, item in enumerate(items)]

    checked: list[tuple[int, Prepared]] = []
    usable = ctx.usable
    for index, item in enumerate(items):
        if usable(item):
            checked.append((index, item))
        else:
            results[index] = ItemResult("REJECTED", problems=ctx.problems(item, index))
    if overflowing:
        checked = [entry for entry in checked if entry[0] not in overflowing]
        for index, result in overflowing.items():
            results[index] = result
    await ctx.load(connection, {(item.service_id, item.period) for _, item in checked})
    charged = ctx.charged
    valid = [entry for entry in checked if (entry[1].service_id, entry[1].period, entry[1].metric) in charged]
    if len(valid) < len(checked):
        for index, item in checked:
            if (item.service_id, item.period, item.metric) not in charged:
                results[index] = ItemResult(
                    "REJECTED",
                    problems=[Problem(("events", str(index), "metric"), "UNKNOWN_METRIC", f"the service does not charge {item.metric!r} in {item.period}")],
                )

    fresh, inserts = await _claim_keys(connection, network_id, valid, services, results)
    try:
        await _apply(session, ctx, [Change(e.period, e.service_id, e.consumer_id, e.metric, e.quantity, 1) for e in fresh], inserts.pending)
    except _Overflow as overflow:
        raise overflow.of_items(results) from None
    finally:
        if inserts.running is not None:  # done before the savepoint ends, whatever happened meanwhile
            await inserts.running
    try:
        await _correct_closed(session, ctx, fresh)
    except _Overflow as overflow:
        raise overflow.of_items(results) from None
    return Recorded([r for r in results if r is not None]), fresh


async def _forget_unseen(session: AsyncSession, principal: Principal, allowed: dict[int, bool]) -> None:
    """A service the principal may not record on is FORBIDDEN where it can see the service, and
    does not exist for it (NOT_FOUND, as an unknown id) where it cannot. A refused batch's extra read."""
    refused = [service_id for service_id, ok in allowed.items() if not ok]
    seen = set(await session.scalars(select(Service.id).where(Service.id.in_(refused), visible_services(principal))))
    for service_id in refused:
        if service_id not in seen:
            del allowed[service_id]


async def _correct_closed(session: AsyncSession, ctx: _Context, changed: list) -> None:
    """Late events and voids leave a closed period untouched: the period's flows are recomputed
    and their differences booked as adjustments into the oldest open period."""
    touched: dict[str, set[int]] = defaultdict(set)
    for event in changed:
        if event.period in ctx.closed:
            touched[event.period].add(event.service_id)
    if not touched:
        return
    network = await session.get(Network, ctx.network.id)  # the rows themselves: settlement works on them
    for period in sorted(touched):
        services = [await session.get(Service, service_id) for service_id in sorted(touched[period])]
        try:
            await settlement.book_corrections(session, network, services, period)
        except FlowTooLarge:  # the period's late events are rejected, the rest of the batch recorded
            late = [position for position, event in enumerate(changed) if event.period == period]
            raise _Overflow(late, "FLOW_OVERFLOW", f"correcting the closed period {period} would move more than 2^62 minor units") from None


_CHUNK = 1000
"Rows per statement: bounds its parameters (PostgreSQL takes at most 32,767)."


def _chunks(rows: list):
    for start in range(0, len(rows), _CHUNK):
        yield rows[start : start + _CHUNK]


# The hot path speaks SQLAlchemy Core: fixed statements run as executemany (compiled once and
# cached, whatever the batch size) and plain rows, no ORM objects and no unit of work.
_EVENTS = UsageEvent.__table__
_BLOCKS = ConsumerBlock.__table__
_PARTIES = Party.__table__
_LINES = UsageLine.__table__
_USAGE = ServiceUsage.__table__
_REVENUE = ServiceRevenue.__table__
_LINE_KEY = ("period", "service_id", "consumer_id", "metric")
_LINE_TOTALS = ("events", "quantity", "min_events", "max_events", "mid_events", "mid_quantity", "amount")


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


_EVENT_COLUMNS = [_EVENTS.c[name] for name in StoredEvent.__dataclass_fields__]
_NEW_EVENT = ("network_id", "service_id", "consumer_id", "idempotency_key", "metric", "quantity", "occurred_at", "period", "recorded_at")
"The columns a new event is inserted with."


class NewEvent(namedtuple("NewEventRow", ("id", *_NEW_EVENT))):
    """An event as a batch inserted it: its id and the row it was written with (_NEW_EVENT),
    times as bound. A batch of the import accepts thousands and hands back none, so the
    StoredEvent an answer shows is made only when asked for (ItemResult.event)."""

    __slots__ = ()

    def event(self) -> StoredEvent:
        return StoredEvent(*self[:7], _time_of(self.occurred_at), self.period, _time_of(self.recorded_at))


_new_event = partial(tuple.__new__, NewEvent)
"NewEvent from a tuple of its fields, without NamedTuple's own constructor (a Python function)."


def _time_of(bound) -> datetime:
    """A time bound by bind_time, as the aware UTC datetime it binds."""
    return bound if isinstance(bound, datetime) else datetime.fromisoformat(bound).replace(tzinfo=UTC)


class _Statements:
    """The batch's statements, built once per dialect.

    The rows a batch writes per event and per line go through the driver (_write_all, and
    _fetch for those it reads back): SQLAlchemy's processing of every bound value cost about a
    quarter of a batch. The values are plain ints and strings, and times bound by bind_time."""

    def __init__(self, dialect) -> None:
        # The dialect's module when it is first used: the import command on SQLite never loads PostgreSQL's.
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        self.paramstyle = dialect.paramstyle
        self.numbers_events = dialect.name == "sqlite"
        "Whether a batch gives its events their ids itself (_insert_events)."
        self.last_event_id = f"SELECT max(id) FROM {_EVENTS.name}"
        self.new_consumer = insert(_PARTIES).on_conflict_do_nothing(
            index_elements=["network_id", "billing_party_id", "external_ref"]
        )
        self.bind_time = bind_time(dialect.name)
        # Look-ups by a list of values (the `IN (*)` is expanded per length, see in_list).
        self.consumers_by_ref = (
            f"SELECT id, external_ref FROM {_PARTIES.name} WHERE network_id = ? AND kind = 'CONSUMER' "
            "AND billing_party_id = ? AND external_ref IN (*)"
        )
        self.network = self.native(f"SELECT id, time_zone, first_period, rounding_mode FROM {Network.__tablename__} WHERE id = ?")
        self.services = (
            f"SELECT id, network_id, provider_id, billed_by_id, currency FROM {Service.__tablename__} "
            "WHERE network_id = ? AND id IN (*)"
        )
        self.closed = self.native(f"SELECT key FROM {ClosedPeriod.__tablename__} WHERE network_id = ?")
        self.plans = (
            f"SELECT service_id, charges FROM {PricePlan.__tablename__} WHERE network_id = ? AND effective_from <= ? "
            "AND (effective_to IS NULL OR effective_to > ?) AND service_id IN (*)"
        )
        self.savepoint_batch = "SAVEPOINT usage_batch"
        self.rollback_batch = "ROLLBACK TO SAVEPOINT usage_batch"
        self.release_batch = "RELEASE SAVEPOINT usage_batch"
        # Keys are unique per service (DESIGN §2): looked up by the plain index on (network, key),
        # the rows of other services' keys left out by _claim_keys.
        self.keys_taken = f"SELECT service_id, idempotency_key FROM {_EVENTS.name} WHERE network_id = ? AND idempotency_key IN (*)"
        self.lock_lines = (
            f"SELECT consumer_id, {', '.join(_LINE_TOTALS)} FROM {_LINES.name} WHERE network_id = ? AND period = ? "
            "AND service_id = ? AND metric = ? AND consumer_id IN (*) ORDER BY consumer_id"
            + (" FOR UPDATE" if dialect.name == "postgresql" else "")  # SQLite's writer holds the database's lock
        )
        lock = " FOR UPDATE" if dialect.name == "postgresql" else ""
        self.service_usage = (
            f"SELECT service_id, metric, events, quantity FROM {_USAGE.name} WHERE network_id = ? AND period = ? "
            f"AND service_id IN (*) ORDER BY service_id, metric{lock}"
        )
        self.service_revenue = (
            f"SELECT service_id, amount FROM {_REVENUE.name} WHERE network_id = ? AND period = ? "
            f"AND service_id IN (*) ORDER BY service_id{lock}"
        )
        self.events_by_key = (
            select(*_EVENT_COLUMNS, _PARTIES.c.external_ref)
            .join(_PARTIES, _PARTIES.c.id == _EVENTS.c.consumer_id)
            .where(_EVENTS.c.network_id == bindparam("network_id"), _EVENTS.c.idempotency_key.in_(bindparam("keys", expanding=True)))
        )
        self.new_line = self.native(
            f"INSERT INTO {_LINES.name} (network_id, {', '.join(_LINE_KEY)}, {', '.join(_LINE_TOTALS)}) "
            f"VALUES (?, ?, ?, ?, ?{', 0' * len(_LINE_TOTALS)}) ON CONFLICT DO NOTHING"
        )
        self.update_line = self.native(
            f"UPDATE {_LINES.name} SET {', '.join(f'{name} = ?' for name in _LINE_TOTALS)} "
            f"WHERE network_id = ? AND {' AND '.join(f'{name} = ?' for name in _LINE_KEY)}"
        )
        self.add_service_usage = self.native(
            f"INSERT INTO {_USAGE.name} (network_id, period, service_id, metric, events, quantity) VALUES (?, ?, ?, ?, ?, ?) "
            f"ON CONFLICT (network_id, period, service_id, metric) DO UPDATE SET "
            f"events = {_USAGE.name}.events + excluded.events, quantity = {_USAGE.name}.quantity + excluded.quantity"
        )
        self.add_service_revenue = self.native(
            f"INSERT INTO {_REVENUE.name} (network_id, period, service_id, amount) VALUES (?, ?, ?, ?) "
            f"ON CONFLICT (network_id, period, service_id) DO UPDATE SET amount = {_REVENUE.name}.amount + excluded.amount"
        )

    def native(self, sql: str) -> str:
        """Driver SQL written with `?` in the driver's own style (asyncpg numbers them: $1, $2)."""
        if self.paramstyle == "qmark":
            return sql
        if self.paramstyle != "numeric_dollar":
            raise NotImplementedError(f"paramstyle {self.paramstyle}")
        first, *rest = sql.split("?")
        return first + "".join(f"${number}{text}" for number, text in enumerate(rest, 1))

    # Cached per length, a few hundred at most (the instances live once per dialect).
    @lru_cache(maxsize=256)  # noqa: B019
    def in_list(self, sql: str, count: int) -> str:
        """A look-up's SQL with its `IN (*)` holding `count` parameters, in the driver's style."""
        return self.native(sql.replace("(*)", f"({', '.join(['?'] * count)})"))

    @lru_cache(maxsize=64)  # noqa: B019
    def new_blocks(self, rows: int) -> str:
        """One INSERT of `rows` consumer blocks, those noted already skipped."""
        values = ", ".join(["(?, ?, ?)"] * rows)
        return self.native(f"INSERT INTO {_BLOCKS.name} (network_id, consumer_id, id_block) VALUES {values} ON CONFLICT DO NOTHING")

    @lru_cache(maxsize=64)  # noqa: B019
    def new_events(self, rows: int) -> str:
        """One INSERT of `rows` events. SQLite's rows come with their ids (see _insert_events);
        elsewhere the keys already taken are skipped and the new ones come back with their ids
        (RETURNING, which executemany cannot give)."""
        if self.numbers_events:
            values = ", ".join([f"({', '.join(['?'] * (1 + len(_NEW_EVENT)))})"] * rows)
            return f"INSERT INTO {_EVENTS.name} (id, {', '.join(_NEW_EVENT)}) VALUES {values}"
        values = ", ".join([f"({', '.join(['?'] * len(_NEW_EVENT))})"] * rows)
        return self.native(
            f"INSERT INTO {_EVENTS.name} ({', '.join(_NEW_EVENT)}) VALUES {values} "
            "ON CONFLICT (network_id, service_id, idempotency_key) DO NOTHING RETURNING id, service_id, idempotency_key"
        )


_STATEMENTS: dict[str, _Statements] = {}


async def _fetch(connection: AsyncConnection, sql: str, parameters: tuple) -> list:
    """A statement's rows as the driver gives them (aiosqlite's tuples, asyncpg's records), in
    the connection's transaction: SQLAlchemy's Row cost about a microsecond per row read, and
    the hot path reads one per line and per event. `sql` in the driver's style (native)."""
    driver = (await connection.get_raw_connection()).driver_connection
    if connection.dialect.paramstyle == "qmark":
        return await driver.execute_fetchall(sql, parameters)
    return await driver.fetch(sql, *parameters)


async def _fetch_all(connection: AsyncConnection, reads: list[tuple[str, tuple]]) -> list[list]:
    """The rows of each (sql, parameters), in order, handed to the database in one turn where
    the driver queues statements (aiosqlite's thread runs them one after another, and this
    thread waits once); asyncpg runs one statement at a time on a connection, so there in turn."""
    if connection.dialect.paramstyle == "qmark":
        return list(await _submit(connection, reads))
    return [await _fetch(connection, sql, parameters) for sql, parameters in reads]


async def _write_all(connection: AsyncConnection, writes: list[tuple[str, list[tuple]]]) -> None:
    """Each (sql, rows) run once per row, in order and in one turn as _fetch_all does."""
    driver = (await connection.get_raw_connection()).driver_connection
    if connection.dialect.paramstyle != "qmark":
        for sql, rows in writes:
            await driver.executemany(sql, rows)
        return

    async def write(sql: str, rows: list[tuple]) -> None:
        async with driver.executemany(sql, rows):
            pass

    await asyncio.gather(*(write(sql, rows) for sql, rows in writes))


def _statements(connection: AsyncConnection) -> _Statements:
    name = connection.dialect.name
    if name not in _STATEMENTS:
        _STATEMENTS[name] = _Statements(connection.dialect)
    return _STATEMENTS[name]


def _consumer_reads(statements: "_Statements", network_id: int, refs: set[tuple[int, str]]) -> list[tuple[str, tuple]]:
    """The look-ups of consumers by (merchant of record, reference), as _fetch_all takes them."""
    by_merchant: dict[int, list[str]] = defaultdict(list)
    for merchant, ref in refs:
        by_merchant[merchant].append(ref)
    return [
        (statements.in_list(statements.consumers_by_ref, len(chunk)), (network_id, merchant, *chunk))
        for merchant, names in sorted(by_merchant.items())
        for chunk in _chunks(sorted(names))
    ]


def _consumer_ids(reads: list[tuple[str, tuple]], answers: list[list]) -> dict[tuple[int, str], int]:
    """Consumer ids by (merchant of record, reference), from the answers to _consumer_reads."""
    found: dict[tuple[int, str], int] = {}
    for (_, parameters), rows in zip(reads, answers):
        merchant = parameters[1]
        found.update({(merchant, ref): party_id for party_id, ref in rows})
    return found


async def _consumers(connection: AsyncConnection, network_id: int, refs: set[tuple[int, str]],
                     found: dict[tuple[int, str], int]) -> dict[tuple[int, str], int]:
    """Consumer ids of `refs`, given those `found` by _consumer_reads; unknown references become consumers."""
    missing = refs - found.keys()
    if missing:
        now = utcnow()
        statements = _statements(connection)
        await connection.execute(
            statements.new_consumer,
            [
                {"network_id": network_id, "kind": "CONSUMER", "name": ref, "external_ref": ref,
                 "billing_party_id": merchant, "active": True, "created_at": now}
                for merchant, ref in sorted(missing)
            ],
        )
        reads = _consumer_reads(statements, network_id, missing)
        found = {**found, **_consumer_ids(reads, await _fetch_all(connection, reads))}
    return found


async def _events_by_key(connection: AsyncConnection, network_id: int,
                         keys: list[tuple[int, str]]) -> dict[tuple[int, str], tuple[StoredEvent, str]]:
    """Stored events by (service, idempotency key), each with its consumer's reference; another
    service's event of the same key is none of the batch's business."""
    found = {}
    wanted = set(keys)
    statement = _statements(connection).events_by_key
    for chunk in _chunks(sorted({key for _, key in keys})):
        rows = await connection.execute(statement, {"network_id": network_id, "keys": chunk})
        for row in rows:
            event = StoredEvent(*row[:-1])
            if (event.service_id, event.idempotency_key) in wanted:
                found[(event.service_id, event.idempotency_key)] = (event, row[-1])
    return found


async def _claim_keys(connection: AsyncConnection, network_id, valid: list[tuple[int, Prepared]], services,
                      results) -> tuple[list[NewEvent], "_Inserts"]:
    """Insert the events whose keys are new; the unique key decides, also between concurrent
    batches. An item whose key is taken is a duplicate (same payload) or a conflict, and writes
    nothing, not even its consumer. Returns the accepted events, and on SQLite their inserts
    still running or not yet sent (_insert_events).

    Which keys are taken, the consumers' ids and (SQLite) the highest event id are read in one
    turn: the consumers of every valid item are looked up, only those of new ones created."""
    statements = _statements(connection)
    keys = dict.fromkeys([(item.service_id, item.idempotency_key) for _, item in valid])
    "The batch's (service, key) pairs, each once: a key is unique within its service."
    merchant = {service_id: service.billed_by_id for service_id, service in services.items()}
    names = list(dict.fromkeys([key for _, key in keys]))
    key_reads = [(statements.in_list(statements.keys_taken, len(chunk)), (network_id, *chunk)) for chunk in _chunks(names)]
    refs = {(merchant[item.service_id], item.consumer_ref) for _, item in valid}
    consumer_reads = _consumer_reads(statements, network_id, refs)
    id_reads = [(statements.last_event_id, ())] if statements.numbers_events else []
    answers = await _fetch_all(connection, [*key_reads, *consumer_reads, *id_reads])
    taken = [key for rows in answers[: len(key_reads)] for key in map(tuple, rows) if key in keys]
    found = _consumer_ids(consumer_reads, answers[len(key_reads) : len(key_reads) + len(consumer_reads)])
    # SQLite: the ids follow the table's highest (see _insert_events); elsewhere the database numbers them.
    ids = count((answers[-1][0][0] or 0) + 1) if id_reads else repeat(None)
    stored = await _events_by_key(connection, network_id, taken)
    first_of_key: dict[tuple[int, str], int] = {}
    if stored or len(keys) < len(valid):
        for index, item in valid:
            first_of_key.setdefault((item.service_id, item.idempotency_key), index)
        new = [(index, item) for index, item in valid
               if (key := (item.service_id, item.idempotency_key)) not in stored and first_of_key[key] == index]
    else:  # the usual batch: every key new and sent once
        new = valid
    if new is not valid:  # only the new items' consumers are created
        refs = {(merchant[item.service_id], item.consumer_ref) for _, item in new}
    consumers = await _consumers(connection, network_id, refs, found)
    recorded = statements.bind_time(utcnow())
    rows = [
        _new_event((event_id, network_id, item.service_id, consumers[(merchant[item.service_id], item.consumer_ref)],
                    item.idempotency_key, item.metric, item.quantity, item.occurred_at, item.period, recorded))
        for event_id, (_, item) in zip(ids, new)
    ]
    inserted, inserts = await _insert_events(connection, statements, rows)
    if new is valid and len(inserted) == len(rows):  # the usual batch: every item accepted
        for (index, _), event in zip(valid, inserted):
            results[index] = ItemResult("ACCEPTED", event)
        return inserted, inserts
    by_key = {(event.service_id, event.idempotency_key): event for event in inserted}
    # Keys a concurrent batch stored between our look-up and our insert: read them now.
    late = sorted(keys.keys() - stored.keys() - by_key.keys())
    if late:
        stored.update(await _events_by_key(connection, network_id, late))
    if not first_of_key:
        first_of_key = {(item.service_id, item.idempotency_key): index for index, item in valid}
    first_items = dict(valid) if len(keys) < len(valid) else {}
    "Items by index, for the keys sent twice in the batch."
    bind = statements.bind_time
    fresh = []
    for index, item in valid:
        key = (item.service_id, item.idempotency_key)
        first = first_of_key[key]
        event = by_key.get(key)
        if event is not None:
            if first == index:
                results[index] = ItemResult("ACCEPTED", event)
                fresh.append(event)
                continue
            same = first_items[first] == item  # the same payload as the batch's first item of the key
        else:
            event, ref = stored[key]
            same = _same_payload(event, item, ref, bind)
        if same:
            results[index] = ItemResult("DUPLICATE", event)
        else:
            results[index] = ItemResult(
                "REJECTED",
                problems=[Problem(("events", str(index), "idempotencyKey"), "IDEMPOTENCY_CONFLICT", "the key was used for another event")],
            )
    return fresh, inserts


class _Inserts(NamedTuple):
    """SQLite's inserts of a batch's events: those sent already, and those _apply sends after its
    reads of the totals (see _insert_events)."""

    running: asyncio.Future | None
    pending: list[tuple[str, tuple]]


_NO_INSERTS = _Inserts(None, [])
"Beyond SQLite: the inserts are done when _insert_events returns."


async def _insert_events(connection: AsyncConnection, statements: "_Statements",
                         events: list[NewEvent]) -> tuple[list[NewEvent], _Inserts]:
    """Insert the new events (each with its id on SQLite, see _claim_keys): those inserted, in
    order, and on SQLite the inserts themselves, running or to be sent.

    SQLite: the batch holds the database's write lock (write_turn) from the look-up of its keys
    to its commit, so every key found free is still free and the next ids are the table's
    highest plus one: the rows go in with their ids, neither skipping a taken key nor returning
    ids (RETURNING cost a fifth of the insert). The unique key still refuses a key stored twice.
    The database writes the events while this thread goes on with the batch: all chunks but the
    last are sent at once (a backfill's batch of 50,000 is written while its results and totals
    are worked out), the last one and the consumers' blocks by _apply after its reads of the
    totals, which it reprices meanwhile (a batch of the API's usual size is one chunk).
    Elsewhere (PostgreSQL) concurrent batches write at once: the unique key decides, the ids
    come back with the keys inserted, and a key another batch took meanwhile is not among them.
    Either way the blocks of ids that the events put their consumers in are noted (_note_blocks)."""
    if statements.numbers_events:
        inserts = [(statements.new_events(len(chunk)), tuple(chain.from_iterable(chunk))) for chunk in _chunks(events)]
        early, last = inserts[:-1], inserts[-1:]
        running = _submit(connection, early) if early else None
        if running is not None:
            try:
                await asyncio.sleep(0)  # the early chunks are handed to the driver before this thread goes on
            except BaseException:
                running.cancel()  # cancelled: the batch's transaction is rolled back
                raise
        return events, _Inserts(running, last + _note_blocks(statements, events))

    inserted: list[NewEvent | None] = [None] * len(events)
    "By the events' positions: RETURNING gives its rows in no set order."

    def take(returned: list, chunk: dict) -> None:
        for event_id, service_id, key in returned:
            position = chunk[(service_id, key)]
            inserted[position] = _new_event((event_id, *events[position][1:]))

    # Pipelined: while one chunk's INSERT runs in the database server, this thread builds the
    # next chunk's rows and takes in the ids of the one before. One statement at a time all the
    # same, in this transaction, on the driver's connection.
    running: tuple[asyncio.Future, dict] | None = None
    try:
        for start in range(0, len(events), _CHUNK):
            chunk = events[start : start + _CHUNK]
            positions = {(event.service_id, event.idempotency_key): position for position, event in enumerate(chunk, start)}
            done = None if running is None else (await running[0], running[1])
            values = tuple(chain.from_iterable(event[1:] for event in chunk))  # without the id
            running = (asyncio.ensure_future(_fetch(connection, statements.new_events(len(chunk)), values)), positions)
            await asyncio.sleep(0)  # the INSERT is handed to the driver before this thread goes on
            if done is not None:
                take(*done)
        if running is not None:
            take(await running[0], running[1])
            running = None
    finally:
        if running is not None:
            running[0].cancel()  # this batch failed or was cancelled: its transaction is rolled back
    events = [event for event in inserted if event is not None]
    await _fetch_all(connection, _note_blocks(statements, events))
    return events, _NO_INSERTS


def _note_blocks(statements: "_Statements", events: list[NewEvent]) -> list[tuple[str, tuple]]:
    """The INSERTs (as _fetch_all takes them) of the consumer blocks these events fall in
    (ConsumerBlock), in one order (concurrent batches beyond SQLite wait for each other's new
    blocks, never in a circle). A block is new to a consumer only once per EVENT_BLOCK events:
    mostly nothing is written."""
    if not events:
        return []
    network_id = events[0].network_id
    blocks = sorted({(event.consumer_id, event.id // EVENT_BLOCK) for event in events})
    return [
        (statements.new_blocks(len(chunk)), tuple(chain.from_iterable((network_id, *block) for block in chunk)))
        for chunk in _chunks(blocks)
    ]


def _line_reads(statements: "_Statements", network_id: int, keys: list[tuple]) -> list[tuple[str, tuple]]:
    """The reads of these lines' totals (those that exist), locked (beyond SQLite) in one global
    order: (period, service, metric) groups in order, consumers in order within a group."""
    groups: dict[tuple[str, int, str], list[int]] = defaultdict(list)
    for period, service_id, consumer_id, metric in keys:
        groups[(period, service_id, metric)].append(consumer_id)
    return [
        (statements.in_list(statements.lock_lines, len(chunk)), (network_id, period, service_id, metric, *chunk))
        for (period, service_id, metric), consumer_ids in sorted(groups.items())
        for chunk in _chunks(sorted(consumer_ids))
    ]


def _lines(reads: list[tuple[str, tuple]], answers: list[list]) -> dict[tuple, list[int]]:
    """Lines' totals by (period, service, consumer, metric), from the answers to _line_reads."""
    found: dict[tuple, list[int]] = {}
    for (_, (_, period, service_id, metric, *_)), rows in zip(reads, answers):
        for consumer_id, *totals in rows:
            found[(period, service_id, consumer_id, metric)] = totals
    return found


def _service_reads(statements: "_Statements", network_id: int, periods: set[str], service_ids: set[int]) -> list[tuple[str, tuple]]:
    """The reads of the services' usage and revenue as stored, per period (locked beyond SQLite,
    after the lines)."""
    ids = sorted(service_ids)
    return [
        read
        for period in sorted(periods)
        for read in ((statements.in_list(statements.service_usage, len(ids)), (network_id, period, *ids)),
                     (statements.in_list(statements.service_revenue, len(ids)), (network_id, period, *ids)))
    ]


def _service_totals(reads: list[tuple[str, tuple]], answers: list[list]):
    """The services' usage ((events, quantity) by (period, service, metric)) and revenue (by
    (period, service)), from the answers to _service_reads."""
    usage_totals: dict[tuple[str, int, str], tuple[int, int]] = {}
    revenue_totals: dict[tuple[str, int], int] = {}
    for position in range(0, len(reads), 2):
        period = reads[position][1][1]
        for service_id, metric, event_count, quantity in answers[position]:
            usage_totals[(period, service_id, metric)] = (event_count, quantity)
        for service_id, amount in answers[position + 1]:
            revenue_totals[(period, service_id)] = amount
    return usage_totals, revenue_totals


def _submit(connection: AsyncConnection, statements: list[tuple[str, tuple]]) -> asyncio.Future:
    """SQLite: these statements queued on the driver's thread in this order, their rows awaited later."""
    return asyncio.gather(*(_fetch(connection, sql, parameters) for sql, parameters in statements))


async def _apply(session: AsyncSession, ctx: _Context, changes: list[Change], inserts: list[tuple[str, tuple]] = ()) -> None:
    """Fold events in (sign 1) or out (sign -1) of the running totals and reprice what they touch
    (app.billing.running_totals does the arithmetic; this reads and writes the totals). The plans
    of the changes' services and periods are in `ctx` already (ctx.load).

    `inserts`: SQLite's inserts of the events changed (_insert_events), queued after the reads of
    the totals: the database writes the events while this thread reprices, and all is done
    before this returns or raises (the savepoint of a failed batch rolls them back).
    """
    if not changes:
        return
    network = ctx.network
    connection = await session.connection()
    statements = _statements(connection)
    deltas = running_totals.deltas_of(changes, ctx.charge)
    # Lines are locked in one order, then the services' totals; missing lines are created empty
    # (in key order) and then locked: concurrent writers on PostgreSQL wait for each other
    # instead of losing an update (SQLite holds its write lock).
    keys = sorted(deltas.lines)
    line_reads = _line_reads(statements, network.id, keys)
    service_reads = _service_reads(statements, network.id, {period for period, *_ in keys}, {k[1] for k in keys})
    reads = [*line_reads, *service_reads]
    if inserts:
        reading, written = _submit(connection, reads), _submit(connection, inserts)
    else:
        reading, written = _fetch_all(connection, reads), None
    try:
        await _reprice(connection, ctx, changes, deltas, keys, line_reads, service_reads, await reading)
    finally:
        if written is not None:
            await written


async def _reprice(connection: AsyncConnection, ctx: _Context, changes: list[Change], deltas: running_totals.Deltas,
                   keys, line_reads, service_reads, answers) -> None:
    """_apply's second half: the lines repriced from their totals as read (`answers`), checked
    against MAX_TOTAL and written with the services' totals."""
    network = ctx.network
    statements = _statements(connection)
    lines = _lines(line_reads, answers[: len(line_reads)])
    missing = [key for key in keys if key not in lines]
    if missing:
        await _write_all(connection, [(statements.new_line, [(network.id, *key) for key in missing])])
        missing_reads = _line_reads(statements, network.id, missing)
        lines.update(_lines(missing_reads, await _fetch_all(connection, missing_reads)))

    mode = RoundingMode(network.rounding_mode)
    exponents = {service_id: currency_exponent(service.currency) for service_id, service in ctx.services.items()}
    repriced = running_totals.reprice(lines, deltas, ctx.charge, exponents.__getitem__, mode)
    usage_totals, revenue_totals = _service_totals(service_reads, answers[len(line_reads) :])
    if running_totals.totals_overflow(repriced, deltas, usage_totals, revenue_totals):
        raise _Overflow(running_totals.overflowing(changes, lines, usage_totals, revenue_totals, ctx.charge,
                                                   exponents.__getitem__, mode))
    await _write_all(connection, [
        (statements.update_line, [(*totals, network.id, *key) for key, totals in repriced.lines.items()]),
        (statements.add_service_usage, [(network.id, period, service_id, metric, events, quantity)
                                         for (period, service_id, metric), (events, quantity) in sorted(deltas.usage.items())]),
        (statements.add_service_revenue, [(network.id, period, service_id, delta)
                                           for (period, service_id), delta in sorted(repriced.revenue.items())]),
    ])


async def void_usage(rt: Runtime, principal: Principal, idempotency_key: str, service_id: int | None = None) -> UsageEvent:
    """The event stops counting; its line, the service's usage and revenue follow at once.

    A key is unique within its service: the event is searched on `service_id`, or without it on
    every service the principal records on, where the key must name one event only."""
    text.check(idempotency_key, text.IDEMPOTENCY_KEY, "idempotencyKey")
    on_service = () if service_id is None else (UsageEvent.service_id == service_id,)
    async with rt.sessions() as session, write_turn(session):
        found = list(await session.scalars(
            select(UsageEvent)
            .where(UsageEvent.network_id == principal.network_id, UsageEvent.idempotency_key == idempotency_key,
                   UsageEvent.service_id.in_(select(Service.id).where(recordable_services(principal))), *on_service)
            .order_by(UsageEvent.id)
            .limit(2)
            .with_for_update()
        ))
        if not found:
            raise not_found("usage event", "idempotencyKey")
        if len(found) > 1:
            raise DomainError.of(
                "AMBIGUOUS_IDEMPOTENCY_KEY", "the key names events of several services: give the serviceId", "serviceId"
            )
        event = found[0]
        service = await session.get(Service, event.service_id)
        if event.voided_at is not None:
            raise DomainError.of("ALREADY_VOIDED", "the event was voided already", "idempotencyKey")
        network = await session.get(Network, event.network_id)
        event.voided_at = utcnow()
        ctx = _Context(network, {service.id: service})
        ctx.closed = await periods.closed_keys(session, network.id)
        await ctx.load(await session.connection(), {(service.id, event.period)})
        await _apply(session, ctx, [Change(event.period, event.service_id, event.consumer_id, event.metric, event.quantity, -1)])
        await _correct_closed(session, ctx, [event])
        await session.commit()
    await events.usage_changed(rt, principal.network_id, [event])
    return event

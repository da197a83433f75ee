"""Recording and voiding usage: events in, running totals and repriced lines out, O(1) per event.

An accepted event is committed with its effect on the totals in one transaction: the consumer's
line (repriced with the plan of the event's period), the service's usage per metric, and the
service's revenue (the root pool), so that live flows and statements never rescan the events.
"""

import asyncio
import weakref
from collections import Counter, defaultdict, namedtuple
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache, partial
from itertools import chain, count, repeat

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.auth import Principal
from app.billing.money import RoundingMode, currency_exponent, from_micros, to_micros
from app.billing.pricing import Charge, LineUsage, is_clamped, add_event, price_line
from app.db import write_turn
from app.errors import DomainError, Problem, not_found
from app.runtime import Runtime
from app.services import catalog, events, periods, settlement
from app.services.usage_input import FIELDS, Prepared, Preparer, UsageItem, bind_time, printable
from models import ConsumerBlock, Network, Party, Service, ServiceRevenue, ServiceUsage, UsageEvent, UsageLine
from models.usage import EVENT_BLOCK
from models.types import utcnow

MAX_BATCH = 5000
STATUSES = ("ACCEPTED", "DUPLICATE", "REJECTED")
"An item's outcome."
MAX_TOTAL = 2**63 - 1


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


def may_record(principal: Principal, service: Service) -> bool:
    """The service's provider and the network's owner record and void its usage."""
    return principal.network_id == service.network_id and (
        principal.is_owner or principal.party_id == service.provider_id
    )


async def preparer_for(rt: Runtime, principal: Principal) -> Preparer:
    """A Preparer for the principal's network (whose time zone is set once, when it is created)."""
    async with rt.sessions() as session:
        network = await session.get(Network, principal.network_id)
    if network is None:
        raise not_found("network")
    return Preparer(network.time_zone, rt.engine.dialect.name)


_FIELD_ORDER = {name: position for position, name in enumerate(FIELDS)}


class _Context:
    """What a batch needs to know about its services, read once per batch."""

    def __init__(self, network: Network, services: dict[int, Service]) -> None:
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

    async def load(self, session: AsyncSession, pairs: set[tuple[int, str]]) -> None:
        for service_id, period in pairs - self.plans.keys():
            plan = await catalog.plan_for(session, self.network.id, service_id, period)
            charges = self.plans[(service_id, period)] = {c.metric: c for c in catalog.charges_of(plan)}
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
    batch that fails whole rolls back to its savepoint alone, see _record), and none is answered
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
    """Record the batches in one transaction and answer each once it has committed; an error of
    the transaction itself is every batch's answer."""
    outcomes: list[Recorded | DomainError] = []
    changed: list[tuple[int, list]] = []
    try:
        async with rt.sessions() as session, write_turn(session):
            for principal, items, _ in group:
                try:
                    recorded, fresh = await _record(rt, session, principal, items)
                except DomainError as error:
                    outcomes.append(error)
                else:
                    outcomes.append(recorded)
                    changed.append((principal.network_id, fresh))
            await session.commit()
    except BaseException as error:
        for _, _, answer in group:
            if answer.done():
                continue
            if isinstance(error, asyncio.CancelledError):
                answer.cancel()
            else:
                answer.set_exception(error)
        if not isinstance(error, Exception):
            raise
        return
    for network_id, fresh in changed:
        await events.usage_changed(rt, network_id, fresh)
    for outcome, (_, _, answer) in zip(outcomes, group):
        if answer.done():
            continue
        if isinstance(outcome, DomainError):
            answer.set_exception(outcome)
        else:
            answer.set_result(outcome)


class _Overflow(DomainError):
    """Events that would each push a running total past MAX_TOTAL: the batch is written again
    without them (see _record)."""

    def __init__(self, positions: list[int]) -> None:
        super().__init__(Problem(("events",), "QUANTITY_OVERFLOW", "a running total would leave the 64-bit range"))
        self.positions = positions
        "Positions in the changes handed to _apply."


async def _record(rt: Runtime, session: AsyncSession, principal: Principal, items: list) -> tuple[Recorded, list["NewEvent"]]:
    """One batch in the session's write transaction, in a savepoint: its outcome and the events it
    stored. The totals are summed per batch, so an event that would overflow one is found only
    once the batch's events are written; the batch is then rolled back to its savepoint and
    written again with those events rejected (a rare path)."""
    overflowing: dict[int, ItemResult] = {}
    while True:
        try:
            async with session.begin_nested():
                return await _record_once(rt, session, principal, items, overflowing)
        except _Overflow as overflow:
            for index in overflow.positions:
                overflowing[index] = ItemResult("REJECTED", problems=[Problem(
                    ("events", str(index), "quantity"), "QUANTITY_OVERFLOW", "a running total would leave the 64-bit range")])


async def _record_once(rt, session, principal, items, overflowing: dict[int, ItemResult]) -> tuple[Recorded, list["NewEvent"]]:
    """_record's one attempt; the items of `overflowing` are rejected as given."""
    results: list[ItemResult | None] = [None] * len(items)
    network = await session.get(Network, principal.network_id)
    service_ids = {i.service_id for i in items if i.service_id is not None}
    services = {
        s.id: s
        for s in await session.scalars(
            select(Service).where(Service.network_id == network.id, Service.id.in_(service_ids))
        )
    }
    ctx = _Context(network, services)
    ctx.allowed = {service_id: may_record(principal, service) for service_id, service in services.items()}
    ctx.closed = await periods.closed_keys(session, network.id)
    connection = await session.connection()
    bind = _statements(connection).bind_time
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
    await ctx.load(session, {(item.service_id, item.period) for _, item in checked})
    charged = ctx.charged
    valid = [entry for entry in checked if (entry[1].service_id, entry[1].period, entry[1].metric) in charged]
    if len(valid) < len(checked):
        for index, item in checked:
            if (item.service_id, item.period, item.metric) not in charged:
                results[index] = ItemResult(
                    "REJECTED",
                    problems=[Problem(("events", str(index), "metric"), "UNKNOWN_METRIC", f"the service does not charge {item.metric!r} in {item.period}")],
                )

    fresh, written = await _claim_keys(connection, network.id, valid, services, results)
    try:
        await _apply(session, ctx, [(e.period, e.service_id, e.consumer_id, e.metric, e.quantity, 1) for e in fresh])
    except _Overflow as overflow:  # positions among the fresh events, in item order: as item indices
        accepted = [index for index, result in enumerate(results) if result is not None and result.status == "ACCEPTED"]
        raise _Overflow([accepted[position] for position in overflow.positions]) from None
    finally:
        if written is not None:  # the events' inserts, which ran meanwhile: done before the savepoint ends
            await written
    await _correct_closed(session, ctx, fresh)
    return Recorded([r for r in results if r is not None]), fresh


async def _correct_closed(session: AsyncSession, ctx: _Context, changed: list) -> None:
    """Late events and voids leave a closed period untouched: the period's flows are recomputed
    and their differences booked as adjustments into the oldest open period."""
    touched: dict[str, set[int]] = defaultdict(set)
    for event in changed:
        if event.period in ctx.closed:
            touched[event.period].add(event.service_id)
    for period in sorted(touched):
        services = [ctx.services[service_id] for service_id in sorted(touched[period])]
        await settlement.book_corrections(session, ctx.network, services, period)


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

    The rows a batch writes per event and per line go through the driver (exec_driver_sql, and
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
        self.keys_taken = f"SELECT idempotency_key FROM {_EVENTS.name} WHERE network_id = ? AND idempotency_key IN (*)"
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
            "ON CONFLICT (network_id, idempotency_key) DO NOTHING RETURNING id, idempotency_key"
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


def _statements(connection: AsyncConnection) -> _Statements:
    name = connection.dialect.name
    if name not in _STATEMENTS:
        _STATEMENTS[name] = _Statements(connection.dialect)
    return _STATEMENTS[name]


async def _consumers(connection: AsyncConnection, network_id: int, refs: set[tuple[int, str]]) -> dict[tuple[int, str], int]:
    """Consumer ids by (merchant of record, reference); unknown references become consumers."""

    async def lookup(wanted: set[tuple[int, str]]) -> dict[tuple[int, str], int]:
        by_merchant: dict[int, list[str]] = defaultdict(list)
        for merchant, ref in wanted:
            by_merchant[merchant].append(ref)
        found: dict[tuple[int, str], int] = {}
        statements = _statements(connection)
        for merchant, names in sorted(by_merchant.items()):
            for chunk in _chunks(sorted(names)):
                rows = await _fetch(connection, statements.in_list(statements.consumers_by_ref, len(chunk)), (network_id, merchant, *chunk))
                found.update({(merchant, ref): party_id for party_id, ref in rows})
        return found

    found = await lookup(refs)
    missing = refs - found.keys()
    if missing:
        now = utcnow()
        await connection.execute(
            _statements(connection).new_consumer,
            [
                {"network_id": network_id, "kind": "CONSUMER", "name": ref, "external_ref": ref,
                 "billing_party_id": merchant, "active": True, "created_at": now}
                for merchant, ref in sorted(missing)
            ],
        )
        found.update(await lookup(missing))
    return found


async def _events_by_key(connection: AsyncConnection, network_id: int, keys: list[str]) -> dict[str, tuple[StoredEvent, str]]:
    """Stored events by idempotency key, each with its consumer's reference."""
    found = {}
    statement = _statements(connection).events_by_key
    for chunk in _chunks(keys):
        rows = await connection.execute(statement, {"network_id": network_id, "keys": chunk})
        for row in rows:
            event = StoredEvent(*row[:-1])
            found[event.idempotency_key] = (event, row[-1])
    return found


async def _keys_taken(connection: AsyncConnection, network_id: int, keys: list[str]) -> list[str]:
    """Which of these keys have an event already: most keys of a batch are new, and the stored
    events of the few taken ones are read in full (_events_by_key)."""
    statements = _statements(connection)
    taken = []
    for chunk in _chunks(keys):
        rows = await _fetch(connection, statements.in_list(statements.keys_taken, len(chunk)), (network_id, *chunk))
        taken.extend(key for (key,) in rows)
    return taken


async def _claim_keys(connection: AsyncConnection, network_id, valid: list[tuple[int, Prepared]], services, results) -> tuple[list[NewEvent], asyncio.Future | None]:
    """Insert the events whose keys are new; the unique key decides, also between concurrent
    batches. An item whose key is taken is a duplicate (same payload) or a conflict, and writes
    nothing, not even its consumer. Returns the accepted events, and the inserts still running
    (_insert_events) or None."""
    keys = dict.fromkeys([item.idempotency_key for _, item in valid])
    "The batch's keys, each once."
    stored = await _events_by_key(connection, network_id, await _keys_taken(connection, network_id, list(keys)))
    first_of_key: dict[str, int] = {}
    if stored or len(keys) < len(valid):
        for index, item in valid:
            first_of_key.setdefault(item.idempotency_key, index)
        new = [(index, item) for index, item in valid if item.idempotency_key not in stored and first_of_key[item.idempotency_key] == index]
    else:  # the usual batch: every key new and sent once
        new = valid
    merchant = {service_id: service.billed_by_id for service_id, service in services.items()}
    consumers = await _consumers(connection, network_id, {(merchant[item.service_id], item.consumer_ref) for _, item in new})
    statements = _statements(connection)
    recorded = statements.bind_time(utcnow())
    ids = await _event_ids(connection, statements)
    rows = [
        _new_event((event_id, network_id, item.service_id, consumers[(merchant[item.service_id], item.consumer_ref)],
                    item.idempotency_key, item.metric, item.quantity, item.occurred_at, item.period, recorded))
        for event_id, (_, item) in zip(ids, new)
    ]
    inserted, written = await _insert_events(connection, statements, rows)
    if new is valid and len(inserted) == len(rows):  # the usual batch: every item accepted
        for (index, _), event in zip(valid, inserted):
            results[index] = ItemResult("ACCEPTED", event)
        return inserted, written
    by_key = {event.idempotency_key: event for event in inserted}
    # Keys a concurrent batch stored between our look-up and our insert: read them now.
    late = sorted(keys.keys() - stored.keys() - by_key.keys())
    if late:
        stored.update(await _events_by_key(connection, network_id, late))
    if not first_of_key:
        first_of_key = {item.idempotency_key: index for index, item in valid}
    first_items = dict(valid) if len(keys) < len(valid) else {}
    "Items by index, for the keys sent twice in the batch."
    bind = statements.bind_time
    fresh = []
    for index, item in valid:
        key = item.idempotency_key
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
    return fresh, written


async def _event_ids(connection: AsyncConnection, statements: "_Statements") -> Iterator[int | None]:
    """The ids the batch's new events go in with: on SQLite the table's highest plus one, two,
    and so on (see _insert_events); elsewhere None, the database numbers them."""
    if not statements.numbers_events:
        return repeat(None)
    ((highest,),) = await _fetch(connection, statements.last_event_id, ())
    return count((highest or 0) + 1)


async def _insert_events(connection: AsyncConnection, statements: "_Statements", events: list[NewEvent]) -> tuple[list[NewEvent], asyncio.Future | None]:
    """Insert the new events (with their ids from _event_ids): those inserted, in order, and what
    to await before the batch's savepoint ends (the inserts still running).

    SQLite: the batch holds the database's write lock (write_turn) from the look-up of its keys
    to its commit, so every key found free is still free and the next ids are the table's
    highest plus one: the rows go in with their ids, neither skipping a taken key nor returning
    ids (RETURNING cost a fifth of the insert), and the caller goes on with its events while the
    database writes them. The unique key still refuses a key stored twice.
    Elsewhere (PostgreSQL) concurrent batches write at once: the unique key decides, the ids
    come back with the keys inserted, and a key another batch took meanwhile is not among them.
    Either way the blocks of ids that the events put their consumers in are noted (_note_blocks)."""
    if statements.numbers_events:
        if not events:
            return events, None
        written = asyncio.gather(
            *(_fetch(connection, statements.new_events(len(chunk)), tuple(chain.from_iterable(chunk))) for chunk in _chunks(events)),
            *_note_blocks(connection, statements, events),
        )
        try:
            await asyncio.sleep(0)  # every INSERT is handed to the driver before this thread goes on
        except BaseException:
            written.cancel()  # cancelled: the batch's transaction is rolled back
            raise
        return events, written

    inserted: list[NewEvent | None] = [None] * len(events)
    "By the events' positions: RETURNING gives its rows in no set order."

    def take(returned: list, chunk: dict) -> None:
        for event_id, key in returned:
            position = chunk[key]
            inserted[position] = _new_event((event_id, *events[position][1:]))

    # Pipelined: while one chunk's INSERT runs in the database server, this thread builds the
    # next chunk's rows and takes in the ids of the one before. One statement at a time all the
    # same, in this transaction, on the driver's connection.
    running: tuple[asyncio.Future, dict] | None = None
    try:
        for start in range(0, len(events), _CHUNK):
            chunk = events[start : start + _CHUNK]
            positions = {event.idempotency_key: position for position, event in enumerate(chunk, start)}
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
    for noting in _note_blocks(connection, statements, events):
        await noting
    return events, None


def _note_blocks(connection: AsyncConnection, statements: "_Statements", events: list[NewEvent]) -> list:
    """The INSERTs (not yet awaited) of the consumer blocks these events fall in (ConsumerBlock),
    in one order (concurrent batches beyond SQLite wait for each other's new blocks, never in a
    circle). A block is new to a consumer only once per EVENT_BLOCK events: mostly nothing is
    written."""
    if not events:
        return []
    network_id = events[0].network_id
    blocks = sorted({(event.consumer_id, event.id // EVENT_BLOCK) for event in events})
    return [
        _fetch(connection, statements.new_blocks(len(chunk)), tuple(chain.from_iterable((network_id, *block) for block in chunk)))
        for chunk in _chunks(blocks)
    ]


async def _lock_lines(connection: AsyncConnection, network_id: int, keys: list[tuple]) -> dict[tuple, list[int]]:
    """The totals of these lines that exist, locked (beyond SQLite) in one global order:
    (period, service, metric) groups in order, consumers in order within a group."""
    groups: dict[tuple[str, int, str], list[int]] = defaultdict(list)
    for period, service_id, consumer_id, metric in keys:
        groups[(period, service_id, metric)].append(consumer_id)
    found: dict[tuple, list[int]] = {}
    statements = _statements(connection)
    for (period, service_id, metric), consumer_ids in sorted(groups.items()):
        for chunk in _chunks(sorted(consumer_ids)):
            rows = await _fetch(connection, statements.in_list(statements.lock_lines, len(chunk)), (network_id, period, service_id, metric, *chunk))
            for consumer_id, *totals in rows:
                found[(period, service_id, consumer_id, metric)] = totals
    return found


_NO_QUANTITY = from_micros(0)
"A line's mid_quantity where its charge has no clamp (the value from_micros(0) gives)."


async def _apply(session: AsyncSession, ctx: _Context, changes: list[tuple[str, int, int, str, int, int]]) -> None:
    """Fold events in (sign 1) or out (sign -1) of the running totals and reprice what they touch.

    A change is (period, service_id, consumer_id, metric, quantity in millionths, sign). Adding an
    event to a line's totals is linear (pricing.add_event: counts and quantities move by the
    event's own contribution, whatever the line holds), so the batch's contributions are summed
    per line first and each touched line is read, repriced and written once. The plans of the
    changes' services and periods are in `ctx` already (ctx.load).
    """
    if not changes:
        return
    network = ctx.network
    connection = await session.connection()
    statements = _statements(connection)
    deltas: dict[tuple, list[int]] = {}
    for period, service_id, consumer_id, metric, quantity, sign in changes:
        key = (period, service_id, consumer_id, metric)
        delta = deltas.get(key)
        if delta is None:
            deltas[key] = [sign, sign * quantity, 0, 0, 0, 0]
        else:
            delta[0] += sign
            delta[1] += sign * quantity
    metrics = {(period, service_id, metric) for period, service_id, _, metric in deltas}
    clamped = {key for key in metrics if is_clamped(ctx.charge(key[1], key[0], key[2]))}
    if clamped:  # an event's share of the min/max/mid counts depends on its own quantity
        for period, service_id, consumer_id, metric, quantity, sign in changes:
            if (period, service_id, metric) in clamped:
                one = add_event(ctx.charge(service_id, period, metric), LineUsage.empty(), from_micros(quantity), sign)
                delta = deltas[(period, service_id, consumer_id, metric)]
                delta[2] += one.min_events
                delta[3] += one.max_events
                delta[4] += one.mid_events
                delta[5] += to_micros(one.mid_quantity)
    service_usage = {key: [0, 0] for key in metrics}
    "(events, quantity) by (period, service, metric): the sums of the lines' deltas."
    for (period, service_id, _, metric), delta in deltas.items():
        totals = service_usage[(period, service_id, metric)]
        totals[0] += delta[0]
        totals[1] += delta[1]

    # Lines are locked in one order; missing ones are created empty first (in key order) and
    # then locked: concurrent writers on PostgreSQL wait for each other instead of losing an
    # update (SQLite holds its write lock).
    keys = sorted(deltas)
    lines = await _lock_lines(connection, network.id, keys)
    missing = [key for key in keys if key not in lines]
    if missing:
        await connection.exec_driver_sql(statements.new_line, [(network.id, *key) for key in missing])
        lines.update(await _lock_lines(connection, network.id, missing))

    mode = RoundingMode(network.rounding_mode)
    exponents = {service_id: currency_exponent(service.currency) for service_id, service in ctx.services.items()}
    revenue: dict[tuple[str, int], int] = defaultdict(int)
    updates = []
    overflow = False
    for key in keys:
        period, service_id, consumer_id, metric = key
        old, delta = lines[key], deltas[key]
        events, quantity, min_events = old[0] + delta[0], old[1] + delta[1], old[2] + delta[2]
        max_events, mid_events, mid_quantity = old[3] + delta[3], old[4] + delta[4], old[5] + delta[5]
        new = LineUsage(events, from_micros(quantity), min_events, max_events, mid_events,
                        from_micros(mid_quantity) if mid_quantity else _NO_QUANTITY)
        amount = price_line(ctx.charge(service_id, period, metric), new, exponents[service_id], mode) if events else 0
        overflow = overflow or quantity > MAX_TOTAL or amount > MAX_TOTAL
        revenue[(period, service_id)] += amount - old[6]
        updates.append((events, quantity, min_events, max_events, mid_events, mid_quantity, amount, network.id, *key))
    # SQLite would turn a sum past 2^63-1 into a float: every total is checked before it is written.
    usage_totals, revenue_totals = await _service_totals(connection, network.id, {period for period, *_ in keys}, {k[1] for k in keys})
    overflow = (
        overflow
        or any(usage_totals.get(key, (0, 0))[1] + totals[1] > MAX_TOTAL or usage_totals.get(key, (0, 0))[0] + totals[0] > MAX_TOTAL
               for key, totals in service_usage.items())
        or any(revenue_totals.get(key, 0) + amount > MAX_TOTAL for key, amount in revenue.items())
    )
    if overflow:
        raise _Overflow(_overflowing(ctx, changes, lines, usage_totals, revenue_totals, exponents, mode))
    await connection.exec_driver_sql(statements.update_line, updates)
    await connection.exec_driver_sql(
        statements.add_service_usage,
        [(network.id, period, service_id, metric, events, quantity)
         for (period, service_id, metric), (events, quantity) in sorted(service_usage.items())],
    )
    await connection.exec_driver_sql(
        statements.add_service_revenue,
        [(network.id, period, service_id, delta) for (period, service_id), delta in sorted(revenue.items())],
    )


async def _service_totals(connection: AsyncConnection, network_id: int, periods: set[str], service_ids: set[int]):
    """The services' usage ((events, quantity) by (period, service, metric)) and revenue (by
    (period, service)) as stored, locked beyond SQLite."""
    statements = _statements(connection)
    usage_totals: dict[tuple[str, int, str], tuple[int, int]] = {}
    revenue_totals: dict[tuple[str, int], int] = {}
    ids = sorted(service_ids)
    for period in sorted(periods):
        for service_id, metric, event_count, quantity in await _fetch(
            connection, statements.in_list(statements.service_usage, len(ids)), (network_id, period, *ids)
        ):
            usage_totals[(period, service_id, metric)] = (event_count, quantity)
        for service_id, amount in await _fetch(
            connection, statements.in_list(statements.service_revenue, len(ids)), (network_id, period, *ids)
        ):
            revenue_totals[(period, service_id)] = amount
    return usage_totals, revenue_totals


def _overflowing(ctx: _Context, changes, lines, usage_totals, revenue_totals, exponents, mode) -> list[int]:
    """The positions of the changes that would each push a line's, a service's usage or a
    service's revenue total past MAX_TOTAL, taken one at a time in order as if recorded alone;
    a change that would is left out and the next ones are taken on the totals without it."""
    usage_totals = dict(usage_totals)
    revenue_totals = dict(revenue_totals)
    line_totals = {
        key: (LineUsage(old[0], from_micros(old[1]), old[2], old[3], old[4], from_micros(old[5])), old[6])
        for key, old in lines.items()
    }
    positions = []
    for position, (period, service_id, consumer_id, metric, quantity, sign) in enumerate(changes):
        key = (period, service_id, consumer_id, metric)
        charge = ctx.charge(service_id, period, metric)
        line, old_amount = line_totals[key]
        line = add_event(charge, line, from_micros(quantity), sign)
        amount = price_line(charge, line, exponents[service_id], mode) if line.events else 0
        events, total = usage_totals.get((period, service_id, metric), (0, 0))
        events, total = events + sign, total + sign * quantity
        revenue = revenue_totals.get((period, service_id), 0) + amount - old_amount
        if max(to_micros(line.quantity), amount, events, total, revenue) > MAX_TOTAL:
            positions.append(position)
            continue
        line_totals[key] = (line, amount)
        usage_totals[(period, service_id, metric)] = (events, total)
        revenue_totals[(period, service_id)] = revenue
    return positions


async def void_usage(rt: Runtime, principal: Principal, idempotency_key: str) -> UsageEvent:
    """The event stops counting; its line, the service's usage and revenue follow at once."""
    if not printable(idempotency_key):
        raise not_found("usage event", "idempotencyKey")
    async with rt.sessions() as session, write_turn(session):
        event = await session.scalar(
            select(UsageEvent)
            .where(UsageEvent.network_id == principal.network_id, UsageEvent.idempotency_key == idempotency_key)
            .with_for_update()
        )
        service = None if event is None else await session.get(Service, event.service_id)
        if event is None or not may_record(principal, service):
            raise not_found("usage event", "idempotencyKey")
        if event.voided_at is not None:
            raise DomainError.of("ALREADY_VOIDED", "the event was voided already", "idempotencyKey")
        network = await session.get(Network, event.network_id)
        event.voided_at = utcnow()
        ctx = _Context(network, {service.id: service})
        ctx.closed = await periods.closed_keys(session, network.id)
        await ctx.load(session, {(service.id, event.period)})
        await _apply(session, ctx, [(event.period, event.service_id, event.consumer_id, event.metric, event.quantity, -1)])
        await _correct_closed(session, ctx, [event])
        await session.commit()
    await events.usage_changed(rt, principal.network_id, [event])
    return event

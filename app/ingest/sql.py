"""The write path's SQL, built once per dialect, and the driver-level calls that send it.

The rows a batch writes per event and per line go through the driver: SQLAlchemy's processing of
every bound value cost about a quarter of a batch."""

import asyncio
from functools import lru_cache

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection

from app.ingest.items import bind_time
from app.ingest.results import NEW_EVENT, StoredEvent
from models import ClosedPeriod, ConsumerBlock, Network, Party, PricePlan, Service, ServiceRevenue, ServiceUsage, UsageEvent, UsageLine

CHUNK = 1000
"Rows per statement: bounds its parameters (PostgreSQL takes at most 32,767)."


def chunks(rows: list):
    for start in range(0, len(rows), CHUNK):
        yield rows[start : start + CHUNK]


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

EVENT_COLUMNS = [_EVENTS.c[name] for name in StoredEvent.__dataclass_fields__]


class IngestSql:
    """The batch's statements, built once per dialect.

    The rows a batch writes per event and per line go through the driver (write_all, and
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
        "Whether a batch gives its events their ids itself (keys._insert_events)."
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
        # Keys are unique per service (DESIGN §2): looked up by the unique key's lead (network, key),
        # the rows of other services' keys left out by claim_keys.
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
            select(*EVENT_COLUMNS, _PARTIES.c.external_ref)
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
        """One INSERT of `rows` events. SQLite's rows come with their ids (see keys._insert_events);
        elsewhere the keys already taken are skipped and the new ones come back with their ids
        (RETURNING, which executemany cannot give)."""
        if self.numbers_events:
            values = ", ".join([f"({', '.join(['?'] * (1 + len(NEW_EVENT)))})"] * rows)
            return f"INSERT INTO {_EVENTS.name} (id, {', '.join(NEW_EVENT)}) VALUES {values}"
        values = ", ".join([f"({', '.join(['?'] * len(NEW_EVENT))})"] * rows)
        return self.native(
            f"INSERT INTO {_EVENTS.name} ({', '.join(NEW_EVENT)}) VALUES {values} "
            "ON CONFLICT (network_id, service_id, idempotency_key) DO NOTHING RETURNING id, service_id, idempotency_key"
        )


_SQL: dict[str, IngestSql] = {}


async def fetch(connection: AsyncConnection, sql: str, parameters: tuple) -> list:
    """A statement's rows as the driver gives them (aiosqlite's tuples, asyncpg's records), in
    the connection's transaction: SQLAlchemy's Row cost about a microsecond per row read, and
    the hot path reads one per line and per event. `sql` in the driver's style (native)."""
    driver = (await connection.get_raw_connection()).driver_connection
    if connection.dialect.paramstyle == "qmark":
        return await driver.execute_fetchall(sql, parameters)
    return await driver.fetch(sql, *parameters)


async def fetch_all(connection: AsyncConnection, reads: list[tuple[str, tuple]]) -> list[list]:
    """The rows of each (sql, parameters), in order, handed to the database in one turn where
    the driver queues statements (aiosqlite's thread runs them one after another, and this
    thread waits once); asyncpg runs one statement at a time on a connection, so there in turn."""
    if connection.dialect.paramstyle == "qmark":
        return list(await submit(connection, reads))
    return [await fetch(connection, sql, parameters) for sql, parameters in reads]


async def write_all(connection: AsyncConnection, writes: list[tuple[str, list[tuple]]]) -> None:
    """Each (sql, rows) run once per row, in order and in one turn as fetch_all does."""
    driver = (await connection.get_raw_connection()).driver_connection
    if connection.dialect.paramstyle != "qmark":
        for sql, rows in writes:
            await driver.executemany(sql, rows)
        return

    async def write(sql: str, rows: list[tuple]) -> None:
        async with driver.executemany(sql, rows):
            pass

    await asyncio.gather(*(write(sql, rows) for sql, rows in writes))


def ingest_sql(connection: AsyncConnection) -> IngestSql:
    return sql_of(connection.dialect)


def sql_of(dialect) -> IngestSql:
    """The dialect's IngestSql, built at its first use."""
    if dialect.name not in _SQL:
        _SQL[dialect.name] = IngestSql(dialect)
    return _SQL[dialect.name]


def submit(connection: AsyncConnection, statements: list[tuple[str, tuple]]) -> asyncio.Future:
    """SQLite: these statements queued on the driver's thread in this order, their rows awaited later."""
    return asyncio.gather(*(fetch(connection, sql, parameters) for sql, parameters in statements))

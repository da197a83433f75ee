"""Recording usage: events in, running totals and repriced lines out, O(1) per event.

An accepted event is committed with its effect on the totals in one transaction: the consumer's
line (repriced with the plan of the event's period), the service's usage per metric, and the
service's revenue (the root pool), so that live flows and sql never rescan the events.
"""

from collections.abc import Callable
from datetime import timedelta
from functools import partial

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import Principal
from app.billing.running_totals import Change
from app.errors import DomainError, Problem, not_found
from app.ingest.context import BatchNetwork, BatchService, Context
from app.ingest.items import Prepared, Preparer, UsageItem
from app.ingest.keys import claim_keys
from app.ingest.results import ItemResult, NewEvent, Recorded
from app.ingest.sql import fetch, fetch_all, ingest_sql
from app.ingest.totals import Overflow, apply_changes, correct_closed
from app.runtime import Runtime
from app.services import events
from app.services.access import may_record, visible_services
from app.sqlite import TransactionLost, group_commit, write_turn
from models import Network, Service

MAX_BATCH = 5000


async def preparer_for(rt: Runtime, principal: Principal) -> Preparer:
    """A Preparer for the principal's network (whose time zone is set once, when it is created)."""
    async with rt.sessions() as session:
        network = await session.get(Network, principal.network_id)
    if network is None:
        raise not_found("network")
    return Preparer(network.time_zone, rt.engine.dialect.name)


async def record_usage(rt: Runtime, principal: Principal, items: list[UsageItem], *,
                       max_batch: int | None = MAX_BATCH) -> Recorded:
    """Record a batch; each item is accepted, a duplicate of an earlier event, or rejected with
    its problems. Accepted items are committed before this returns.

    `max_batch` is the API's limit."""
    if max_batch is not None and len(items) > max_batch:
        raise DomainError.of("BATCH_TOO_LARGE", f"at most {max_batch} events per batch", "events")

    def prepare(time_zone: str, dialect: str) -> list[Prepared]:
        preparer = Preparer(time_zone, dialect)
        return [preparer.prepare(item, index) for index, item in enumerate(items)]

    return await _record_batch(rt, principal, _service_ids(items), prepare)


async def record_prepared(rt: Runtime, principal: Principal, items: list[Prepared]) -> Recorded:
    """record_usage for items Prepared by a Preparer for the principal's network and this
    database (the bulk import's reader), each with its index in the batch. No batch limit: the
    import pays a transaction's fixed costs, the commit's sync above all, once per many thousand events."""
    return await _record_batch(rt, principal, _service_ids(items), lambda _time_zone, _dialect: items)


def _service_ids(items: list[UsageItem] | list[Prepared]) -> list[int]:
    return sorted({item.service_id for item in items if item.service_id is not None})


Prepare = Callable[[str, str], list[Prepared]]
"A batch's items, Prepared for its network's time zone and the database's dialect."


async def _record_batch(rt: Runtime, principal: Principal, service_ids: list[int], prepare: Prepare) -> Recorded:
    """SQLite's batches share their transactions (app.sqlite.GroupCommit); elsewhere each has its own."""
    if rt.engine.dialect.name == "sqlite":
        async def committed(outcome: tuple[Recorded, list[NewEvent]]) -> None:
            await events.usage_changed(rt, principal.network_id, outcome[1])

        work = partial(_record, rt, principal=principal, service_ids=service_ids, prepare=prepare)
        recorded, _ = await group_commit(rt.engine, rt.sessions).submit(work, committed)
        return recorded
    async with rt.sessions() as session, write_turn(session):
        recorded, fresh = await _record(rt, session, principal=principal, service_ids=service_ids, prepare=prepare)
        await session.commit()
    await events.usage_changed(rt, principal.network_id, fresh)
    return recorded


async def _record(rt: Runtime, session: AsyncSession, *, principal: Principal, service_ids: list[int],
                  prepare: Prepare) -> tuple[Recorded, list[NewEvent]]:
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
    sql = ingest_sql(connection)
    overflowing: dict[int, ItemResult] = {}
    while True:
        opening = [(sql.savepoint_batch, ())]
        if connection.dialect.paramstyle != "qmark":
            await connection.exec_driver_sql(sql.savepoint_batch)
            opening = []
        try:
            outcome = await _record_once(rt, session, principal, service_ids, prepare, overflowing, opening)
        except BaseException as error:
            try:
                await fetch_all(connection, [(sql.rollback_batch, ()), (sql.release_batch, ())])
            except Exception as lost:
                if isinstance(error, Exception):
                    raise TransactionLost(error) from lost
                raise error from lost
            if not isinstance(error, Overflow):
                raise
            for index in error.positions:
                overflowing[index] = ItemResult("REJECTED", problems=[Problem(
                    ("events", str(index), "quantity"), error.code, error.problems[0].message)])
        else:
            await fetch(connection, sql.release_batch, ())
            return outcome


async def _record_once(rt: Runtime, session: AsyncSession, principal: Principal, service_ids: list[int], prepare: Prepare,
                       overflowing: dict[int, ItemResult], opening: list[tuple[str, tuple]]) -> tuple[Recorded, list[NewEvent]]:
    """_record's one attempt; the items of `overflowing` are rejected as given, and `opening`
    (the savepoint, where not opened yet) goes first in its first turn of reads."""
    connection = await session.connection()
    sql = ingest_sql(connection)
    network_id = principal.network_id
    reads = [*opening, (sql.network, (network_id,)), (sql.closed, (network_id,))]
    if service_ids:
        reads.append((sql.in_list(sql.services, len(service_ids)), (network_id, *service_ids)))
    network_rows, closed_rows, *service_rows = (await fetch_all(connection, reads))[len(opening) :]
    if not network_rows:
        raise not_found("network")
    network = BatchNetwork(*network_rows[0])
    services = {row[0]: BatchService(*row) for rows in service_rows for row in rows}
    ctx = Context(network, services)
    ctx.allowed = {service_id: may_record(principal, service) for service_id, service in services.items()}
    if not all(ctx.allowed.values()):
        await _forget_unseen(session, principal, ctx.allowed)
    ctx.closed = {key for (key,) in closed_rows}
    bind = sql.bind_time
    ctx.latest = bind(rt.now() + timedelta(seconds=rt.settings.future_tolerance_seconds))
    items = prepare(network.time_zone, connection.dialect.name)
    results: list[ItemResult | None] = [None] * len(items)

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

    fresh, inserts = await claim_keys(connection, network_id, valid, services, results)
    try:
        await apply_changes(session, ctx, [Change(e.period, e.service_id, e.consumer_id, e.metric, e.quantity, 1) for e in fresh], inserts.pending)
    except Overflow as overflow:
        raise overflow.of_items(results) from None
    finally:
        if inserts.running is not None:  # done before the savepoint ends, whatever happened meanwhile
            await inserts.running
    try:
        await correct_closed(session, ctx, fresh)
    except Overflow as overflow:
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

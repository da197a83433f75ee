"""The running totals' reads and writes: the lines, the services' usage and revenue, and the
corrections of closed periods (app.billing.running_totals does the arithmetic)."""

from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.billing import running_totals
from app.billing.money import RoundingMode, currency_exponent
from app.billing.running_totals import Change
from app.errors import DomainError, FlowTooLarge, Problem
from app.ingest.context import Context
from app.ingest.results import ItemResult, NewEvent
from app.ingest.sql import IngestSql, chunks, fetch_all, ingest_sql, submit, write_all
from app.services import closing
from models import Network, Service, UsageEvent

class Overflow(DomainError):
    """Events that would each push a running total past MAX_TOTAL, or (FLOW_OVERFLOW) a closed
    period's corrected flows past the waterfall's limit: the batch is written again without them
    (see _record)."""

    def __init__(self, positions: list[int], code: str = "QUANTITY_OVERFLOW",
                 message: str = "a running total would leave the 64-bit range") -> None:
        super().__init__(Problem(("events",), code, message))
        self.positions = positions
        "Positions in the changes handed to apply_changes."

    def of_items(self, results: list[ItemResult | None]) -> "Overflow":
        """The same overflow with its positions among the fresh events (in item order) as item indices."""
        accepted = [index for index, result in enumerate(results) if result is not None and result.status == "ACCEPTED"]
        return Overflow([accepted[position] for position in self.positions], self.code, self.problems[0].message)


async def correct_closed(session: AsyncSession, ctx: Context, changed: Sequence[NewEvent | UsageEvent]) -> None:
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
            await closing.book_corrections(session, network, services, period)
        except FlowTooLarge:  # the period's late events are rejected, the rest of the batch recorded
            late = [position for position, event in enumerate(changed) if event.period == period]
            raise Overflow(late, "FLOW_OVERFLOW", f"correcting the closed period {period} would move more than 2^62 minor units") from None


def _line_reads(sql: IngestSql, network_id: int, keys: list[tuple]) -> list[tuple[str, tuple]]:
    """The reads of these lines' totals (those that exist), locked (beyond SQLite) in one global
    order: (period, service, metric) groups in order, consumers in order within a group."""
    groups: dict[tuple[str, int, str], list[int]] = defaultdict(list)
    for period, service_id, consumer_id, metric in keys:
        groups[(period, service_id, metric)].append(consumer_id)
    return [
        (sql.in_list(sql.lock_lines, len(chunk)), (network_id, period, service_id, metric, *chunk))
        for (period, service_id, metric), consumer_ids in sorted(groups.items())
        for chunk in chunks(sorted(consumer_ids))
    ]


def _lines(reads: list[tuple[str, tuple]], answers: list[list]) -> dict[tuple, list[int]]:
    """Lines' totals by (period, service, consumer, metric), from the answers to _line_reads."""
    found: dict[tuple, list[int]] = {}
    for (_, (_, period, service_id, metric, *_)), rows in zip(reads, answers):
        for consumer_id, *totals in rows:
            found[(period, service_id, consumer_id, metric)] = totals
    return found


def _service_reads(sql: IngestSql, network_id: int, periods: set[str], service_ids: set[int]) -> list[tuple[str, tuple]]:
    """The reads of the services' usage and revenue as stored, per period (locked beyond SQLite,
    after the lines)."""
    ids = sorted(service_ids)
    return [
        read
        for period in sorted(periods)
        for read in ((sql.in_list(sql.service_usage, len(ids)), (network_id, period, *ids)),
                     (sql.in_list(sql.service_revenue, len(ids)), (network_id, period, *ids)))
    ]


def _service_totals(reads: list[tuple[str, tuple]], answers: list[list]) -> tuple[dict[tuple[str, int, str], tuple[int, int]], dict[tuple[str, int], int]]:
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


async def apply_changes(session: AsyncSession, ctx: Context, changes: list[Change], inserts: list[tuple[str, tuple]] = ()) -> None:
    """Fold events in (sign 1) or out (sign -1) of the running totals and reprice what they touch
    (app.billing.running_totals does the arithmetic; this reads and writes the totals). The plans
    of the changes' services and periods are in `ctx` already (ctx.load).

    `inserts`: SQLite's inserts of the events changed (keys._insert_events), queued after the reads of
    the totals: the database writes the events while this thread reprices, and all is done
    before this returns or raises (the savepoint of a failed batch rolls them back).
    """
    if not changes:
        return
    network = ctx.network
    connection = await session.connection()
    sql = ingest_sql(connection)
    deltas = running_totals.deltas_of(changes, ctx.charge)
    # Lines are locked in one order, then the services' totals; missing lines are created empty
    # (in key order) and then locked: concurrent writers on PostgreSQL wait for each other
    # instead of losing an update (SQLite holds its write lock).
    keys = sorted(deltas.lines)
    line_reads = _line_reads(sql, network.id, keys)
    service_reads = _service_reads(sql, network.id, {period for period, *_ in keys}, {k[1] for k in keys})
    reads = [*line_reads, *service_reads]
    if inserts:
        reading, written = submit(connection, reads), submit(connection, inserts)
    else:
        reading, written = fetch_all(connection, reads), None
    try:
        await _reprice(connection, ctx, changes, deltas, keys, line_reads, service_reads, await reading)
    finally:
        if written is not None:
            await written


async def _reprice(connection: AsyncConnection, ctx: Context, changes: list[Change], deltas: running_totals.Deltas,
                   keys, line_reads, service_reads, answers) -> None:
    """apply_changes' second half: the lines repriced from their totals as read (`answers`), checked
    against MAX_TOTAL and written with the services' totals."""
    network = ctx.network
    sql = ingest_sql(connection)
    lines = _lines(line_reads, answers[: len(line_reads)])
    missing = [key for key in keys if key not in lines]
    if missing:
        await write_all(connection, [(sql.new_line, [(network.id, *key) for key in missing])])
        missing_reads = _line_reads(sql, network.id, missing)
        lines.update(_lines(missing_reads, await fetch_all(connection, missing_reads)))

    mode = RoundingMode(network.rounding_mode)
    exponents = {service_id: currency_exponent(service.currency) for service_id, service in ctx.services.items()}
    repriced = running_totals.reprice(lines, deltas, ctx.charge, exponents.__getitem__, mode)
    usage_totals, revenue_totals = _service_totals(service_reads, answers[len(line_reads) :])
    if running_totals.totals_overflow(repriced, deltas, usage_totals, revenue_totals):
        raise Overflow(running_totals.overflowing(changes, lines, usage_totals, revenue_totals, ctx.charge,
                                                   exponents.__getitem__, mode))
    await write_all(connection, [
        (sql.update_line, [(*totals, network.id, *key) for key, totals in repriced.lines.items()]),
        (sql.add_service_usage, [(network.id, period, service_id, metric, events, quantity)
                                         for (period, service_id, metric), (events, quantity) in sorted(deltas.usage.items())]),
        (sql.add_service_revenue, [(network.id, period, service_id, delta)
                                           for (period, service_id), delta in sorted(repriced.revenue.items())]),
    ])

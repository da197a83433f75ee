"""Closing periods and correcting closed ones: a period's flows booked into `ledger_entries` and
its final statements written, numbered without gaps; a closed period recomputed and its
differences booked into the oldest open period (app.services.settlement reads the books)."""

from collections import defaultdict
from collections.abc import Iterable
from itertools import islice

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import Principal
from app.billing.periods import period_bounds
from app.billing.settlement import Entry, StatementLine, corrections, fits_books, statement_lines, totals
from app.db import lock_network_books
from app.errors import AccessDenied, DomainError, FlowTooLarge
from app.runtime import Runtime
from app.services import events, periods
from app.services.settlement import booked_entries, oldest_open_period, period_entries
from app.sqlite import begin_write
from models import ClosedPeriod, FinalStatement, FinalStatementCharge, FinalStatementLine, LedgerEntry, Network, Service, UsageLine
from models.types import utcnow


async def close_period(rt: Runtime, principal: Principal, key: str) -> tuple[str, int]:
    """Freeze the oldest open period once its month has ended: book its flows and write one final
    statement per party and currency, numbered without gaps; all in one transaction, so a close
    that dies leaves the period open with nothing written. Returns (period, statements issued)."""
    if not principal.is_owner:
        raise AccessDenied("only the network's owner may close periods")
    periods.parse_key(key, "period")
    async with rt.sessions() as session:
        await begin_write(session)
        await lock_network_books(session, principal.network_id)
        network = await session.get(Network, principal.network_id)
        if await periods.is_closed(session, network.id, key):
            raise DomainError.of("PERIOD_CLOSED", f"period {key} is closed already", "period")
        if key < network.first_period:
            raise DomainError.of("BEFORE_FIRST_PERIOD", f"the first period is {network.first_period}", "period")
        oldest = await oldest_open_period(session, network)
        if key != oldest:
            raise DomainError.of("PERIOD_NOT_OLDEST", f"the oldest open period is {oldest}", "period")
        if period_bounds(key, network.time_zone)[1] > rt.now():
            raise DomainError.of("PERIOD_NOT_ENDED", f"period {key} has not ended yet", "period")
        session.add(ClosedPeriod(network_id=network.id, key=key, closed_at=rt.now()))
        try:
            await session.flush()
        except IntegrityError:
            raise DomainError.of("PERIOD_CLOSED", f"period {key} was closed by another request", "period") from None
        services = list(await session.scalars(select(Service).where(Service.network_id == network.id).order_by(Service.id)))
        currency_of = {s.id: s.currency for s in services}
        entries = [e for e in await period_entries(session, network, services, key) if e.amount]
        # Core executemany in the close's transaction: no ORM object nor unit of work per entry.
        now = utcnow()
        await _insert_many(session, _LEDGER, (
            {"network_id": network.id, "booked_period": key, "origin_period": key, "adjustment": False, "service_id": e.service,
             "payer_id": e.payer, "payee_id": e.payee, "currency": currency_of[e.service], "amount": e.amount, "created_at": now}
            for e in entries
        ))
        entries += await booked_entries(session, network.id, LedgerEntry.booked_period == key, LedgerEntry.adjustment.is_(True))
        count = await _write_statements(session, network, key, entries, currency_of)
        await session.commit()
    await events.period_closed(rt, principal.network_id, key)
    return key, count


async def _write_statements(session: AsyncSession, network: Network, period: str, entries: list[Entry], currency_of: dict[int, str]) -> int:
    """One final statement per party and currency that moved money, numbered by currency then party
    id; written with Core executemany (statements, then their lines and charges), their ids read
    back once, not flushed one at a time."""
    by_currency: dict[str, list[Entry]] = defaultdict(list)
    for entry in entries:
        by_currency[currency_of[entry.service]].append(entry)
    issued: list[tuple[int, int, str, list[StatementLine], bool]] = []
    "(seq, party, currency, lines, whether the party pays as a consumer)"
    for currency in sorted(by_currency):
        # Each party's own entries, in their order: statement_lines reads only those anyway.
        of_party: dict[int, list[Entry]] = defaultdict(list)
        consumers: set[int] = set()
        for entry in by_currency[currency]:
            of_party[entry.payer].append(entry)
            if entry.payee != entry.payer:
                of_party[entry.payee].append(entry)
            if entry.from_consumer:  # agreements never name a consumer: consumers appear only so
                consumers.add(entry.payer)
        for party_id in sorted(of_party):
            lines = statement_lines(party_id, of_party[party_id])
            if lines and not fits_books(lines):
                raise FlowTooLarge(("Party", party_id), f"the party's statement for {period} would exceed 2^63-1 minor units", "period")
            if lines:
                issued.append((len(issued) + 1, party_id, currency, lines, party_id in consumers))
    if not issued:
        return 0
    now = utcnow()

    def statement_row(seq: int, party_id: int, currency: str, lines: list[StatementLine]) -> dict:
        sums = totals(lines)
        return {"network_id": network.id, "party_id": party_id, "period": period, "currency": currency, "seq": seq,
                "number": f"ST-{period}-{seq:06d}", "receivable": sums.receivable, "payable": sums.payable, "created_at": now}

    await _insert_many(session, _STATEMENTS, (statement_row(*s[:4]) for s in issued))
    connection = await session.connection()
    ids = dict((await connection.execute(
        select(_STATEMENTS.c.seq, _STATEMENTS.c.id).where(_STATEMENTS.c.network_id == network.id, _STATEMENTS.c.period == period)
    )).all())
    await _insert_many(session, _STATEMENT_LINES, (
        {"network_id": network.id, "statement_id": ids[seq], "counterparty_id": l.counterparty, "service_id": l.service,
         "direction": l.direction.value, "amount": l.amount, "adjustment": l.adjustment, "origin_period": l.origin_period}
        for seq, _party, _currency, lines, _consumer in issued
        for l in lines
    ))
    for currency in sorted(by_currency):
        # Consumers' invoice lines, one query per currency (what _invoice_lines reads per consumer).
        statement_of = {party: ids[seq] for seq, party, c, _lines, consumer in issued if consumer and c == currency}
        if not statement_of:
            continue
        rows = await connection.execute(
            select(_USAGE_LINES.c.consumer_id, _USAGE_LINES.c.service_id, _USAGE_LINES.c.metric, _USAGE_LINES.c.quantity,
                   _USAGE_LINES.c.events, _USAGE_LINES.c.amount)
            .where(
                _USAGE_LINES.c.network_id == network.id,
                _USAGE_LINES.c.period == period,
                _USAGE_LINES.c.service_id.in_([s for s, c in currency_of.items() if c == currency]),
                _USAGE_LINES.c.events > 0,
            )
            .order_by(_USAGE_LINES.c.consumer_id, _USAGE_LINES.c.service_id, _USAGE_LINES.c.metric)
        )
        await _insert_many(session, _STATEMENT_CHARGES, (
            {"network_id": network.id, "statement_id": statement_of[consumer], "service_id": service_id, "metric": metric,
             "quantity": quantity, "events": events_, "amount": amount}
            for consumer, service_id, metric, quantity, events_, amount in rows
            if consumer in statement_of
        ))
    return len(issued)


_LEDGER = LedgerEntry.__table__
_STATEMENTS = FinalStatement.__table__
_STATEMENT_LINES = FinalStatementLine.__table__
_STATEMENT_CHARGES = FinalStatementCharge.__table__
_USAGE_LINES = UsageLine.__table__


async def _insert_many(session: AsyncSession, table, rows: Iterable[dict], size: int = 5000) -> None:
    """Rows into a table as Core executemany in the session's transaction, `size` at a time."""
    connection = await session.connection()
    statement = insert(table)
    rows = iter(rows)
    while batch := list(islice(rows, size)):
        await connection.execute(statement, batch)


async def book_corrections(session: AsyncSession, network: Network, services: list[Service], period: str) -> None:
    """After a change to a closed period's totals: book the difference of every flow of these
    services, against what was booked for the period already, into the oldest open period."""
    await lock_network_books(session, network.id)
    currency_of = {s.id: s.currency for s in services}
    ids = list(currency_of)
    recomputed = await period_entries(session, network, services, period)
    booked = await booked_entries(session, network.id, LedgerEntry.origin_period == period, LedgerEntry.service_id.in_(ids))
    into = await oldest_open_period(session, network)
    session.add_all(
        LedgerEntry(network_id=network.id, booked_period=into, origin_period=period, adjustment=True, service_id=e.service,
                    payer_id=e.payer, payee_id=e.payee, currency=currency_of[e.service], amount=e.amount)
        for e in corrections(recomputed, booked, period)
    )
    await session.flush()

"""Claiming a batch's idempotency keys and its consumers: the events inserted, the duplicates and conflicts found."""

import asyncio
from collections.abc import Callable
from collections import defaultdict
from datetime import datetime
from itertools import chain, count, repeat
from typing import NamedTuple

from sqlalchemy.ext.asyncio import AsyncConnection

from app.errors import Problem
from app.ingest.context import BatchService
from app.ingest.items import Prepared
from app.ingest.results import ItemResult, NewEvent, StoredEvent, new_event
from app.ingest.sql import CHUNK, IngestSql, chunks, fetch, fetch_all, ingest_sql, submit
from models.types import utcnow
from models.usage import EVENT_BLOCK

def same_payload(event: StoredEvent, item: Prepared, consumer_ref: str, bind: Callable[[datetime], object]) -> bool:
    return (
        event.service_id == item.service_id
        and consumer_ref == item.consumer_ref
        and event.metric == item.metric
        and event.quantity == item.quantity
        and bind(event.occurred_at) == item.occurred_at
    )


def _consumer_reads(sql: IngestSql, network_id: int, refs: set[tuple[int, str]]) -> list[tuple[str, tuple]]:
    """The look-ups of consumers by (merchant of record, reference), as fetch_all takes them."""
    by_merchant: dict[int, list[str]] = defaultdict(list)
    for merchant, ref in refs:
        by_merchant[merchant].append(ref)
    return [
        (sql.in_list(sql.consumers_by_ref, len(chunk)), (network_id, merchant, *chunk))
        for merchant, names in sorted(by_merchant.items())
        for chunk in chunks(sorted(names))
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
        sql = ingest_sql(connection)
        await connection.execute(
            sql.new_consumer,
            [
                {"network_id": network_id, "kind": "CONSUMER", "name": ref, "external_ref": ref,
                 "billing_party_id": merchant, "active": True, "created_at": now}
                for merchant, ref in sorted(missing)
            ],
        )
        reads = _consumer_reads(sql, network_id, missing)
        found = {**found, **_consumer_ids(reads, await fetch_all(connection, reads))}
    return found


async def _events_by_key(connection: AsyncConnection, network_id: int,
                         keys: list[tuple[int, str]]) -> dict[tuple[int, str], tuple[StoredEvent, str]]:
    """Stored events by (service, idempotency key), each with its consumer's reference; another
    service's event of the same key is none of the batch's business."""
    found = {}
    wanted = set(keys)
    statement = ingest_sql(connection).events_by_key
    for chunk in chunks(sorted({key for _, key in keys})):
        rows = await connection.execute(statement, {"network_id": network_id, "keys": chunk})
        for row in rows:
            event = StoredEvent(*row[:-1])
            if (event.service_id, event.idempotency_key) in wanted:
                found[(event.service_id, event.idempotency_key)] = (event, row[-1])
    return found


async def claim_keys(connection: AsyncConnection, network_id: int, valid: list[tuple[int, Prepared]],
                     services: dict[int, BatchService], results: list[ItemResult | None]) -> tuple[list[NewEvent], "Inserts"]:
    """Insert the events whose keys are new; the unique key decides, also between concurrent
    batches. An item whose key is taken is a duplicate (same payload) or a conflict, and writes
    nothing, not even its consumer. Returns the accepted events, and on SQLite their inserts
    still running or not yet sent (_insert_events).

    Which keys are taken, the consumers' ids and (SQLite) the highest event id are read in one
    turn: the consumers of every valid item are looked up, only those of new ones created."""
    sql = ingest_sql(connection)
    keys = dict.fromkeys([(item.service_id, item.idempotency_key) for _, item in valid])
    "The batch's (service, key) pairs, each once: a key is unique within its service."
    merchant = {service_id: service.billed_by_id for service_id, service in services.items()}
    names = list(dict.fromkeys([key for _, key in keys]))
    key_reads = [(sql.in_list(sql.keys_taken, len(chunk)), (network_id, *chunk)) for chunk in chunks(names)]
    refs = {(merchant[item.service_id], item.consumer_ref) for _, item in valid}
    consumer_reads = _consumer_reads(sql, network_id, refs)
    id_reads = [(sql.last_event_id, ())] if sql.numbers_events else []
    answers = await fetch_all(connection, [*key_reads, *consumer_reads, *id_reads])
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
    recorded = sql.bind_time(utcnow())
    rows = [
        new_event((event_id, network_id, item.service_id, consumers[(merchant[item.service_id], item.consumer_ref)],
                    item.idempotency_key, item.metric, item.quantity, item.occurred_at, item.period, recorded))
        for event_id, (_, item) in zip(ids, new)
    ]
    inserted, inserts = await _insert_events(connection, sql, rows)
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
    bind = sql.bind_time
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
            same = same_payload(event, item, ref, bind)
        if same:
            results[index] = ItemResult("DUPLICATE", event)
        else:
            results[index] = ItemResult(
                "REJECTED",
                problems=[Problem(("events", str(index), "idempotencyKey"), "IDEMPOTENCY_CONFLICT", "the key was used for another event")],
            )
    return fresh, inserts


class Inserts(NamedTuple):
    """SQLite's inserts of a batch's events: those sent already, and those apply_changes sends after its
    reads of the totals (see _insert_events)."""

    running: asyncio.Future | None
    pending: list[tuple[str, tuple]]


NO_INSERTS = Inserts(None, [])
"Beyond SQLite: the inserts are done when _insert_events returns."


async def _insert_events(connection: AsyncConnection, sql: IngestSql,
                         events: list[NewEvent]) -> tuple[list[NewEvent], Inserts]:
    """Insert the new events (each with its id on SQLite, see claim_keys): those inserted, in
    order, and on SQLite the inserts themselves, running or to be sent.

    SQLite: the batch holds the database's write lock (write_turn) from the look-up of its keys
    to its commit, so every key found free is still free and the next ids are the table's
    highest plus one: the rows go in with their ids, neither skipping a taken key nor returning
    ids (RETURNING cost a fifth of the insert). The unique key still refuses a key stored twice.
    The database writes the events while this thread goes on with the batch: all chunks but the
    last are sent at once (a backfill's batch of 50,000 is written while its results and totals
    are worked out), the last one and the consumers' blocks by apply_changes after its reads of the
    totals, which it reprices meanwhile (a batch of the API's usual size is one chunk).
    Elsewhere (PostgreSQL) concurrent batches write at once: the unique key decides, the ids
    come back with the keys inserted, and a key another batch took meanwhile is not among them.
    Either way the blocks of ids that the events put their consumers in are noted (_note_blocks)."""
    if sql.numbers_events:
        inserts = [(sql.new_events(len(chunk)), tuple(chain.from_iterable(chunk))) for chunk in chunks(events)]
        early, last = inserts[:-1], inserts[-1:]
        running = submit(connection, early) if early else None
        if running is not None:
            try:
                await asyncio.sleep(0)  # the early chunks are handed to the driver before this thread goes on
            except BaseException:
                running.cancel()  # cancelled: the batch's transaction is rolled back
                raise
        return events, Inserts(running, last + _note_blocks(sql, events))

    inserted: list[NewEvent | None] = [None] * len(events)
    "By the events' positions: RETURNING gives its rows in no set order."

    def take(returned: list, chunk: dict) -> None:
        for event_id, service_id, key in returned:
            position = chunk[(service_id, key)]
            inserted[position] = new_event((event_id, *events[position][1:]))

    # Pipelined: while one chunk's INSERT runs in the database server, this thread builds the
    # next chunk's rows and takes in the ids of the one before. One statement at a time all the
    # same, in this transaction, on the driver's connection.
    running: tuple[asyncio.Future, dict] | None = None
    try:
        for start in range(0, len(events), CHUNK):
            chunk = events[start : start + CHUNK]
            positions = {(event.service_id, event.idempotency_key): position for position, event in enumerate(chunk, start)}
            done = None if running is None else (await running[0], running[1])
            values = tuple(chain.from_iterable(event[1:] for event in chunk))  # without the id
            running = (asyncio.ensure_future(fetch(connection, sql.new_events(len(chunk)), values)), positions)
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
    await fetch_all(connection, _note_blocks(sql, events))
    return events, NO_INSERTS


def _note_blocks(sql: IngestSql, events: list[NewEvent]) -> list[tuple[str, tuple]]:
    """The INSERTs (as fetch_all takes them) of the consumer blocks these events fall in
    (ConsumerBlock), in one order (concurrent batches beyond SQLite wait for each other's new
    blocks, never in a circle). A block is new to a consumer only once per EVENT_BLOCK events:
    mostly nothing is written."""
    if not events:
        return []
    network_id = events[0].network_id
    blocks = sorted({(event.consumer_id, event.id // EVENT_BLOCK) for event in events})
    return [
        (sql.new_blocks(len(chunk)), tuple(chain.from_iterable((network_id, *block) for block in chunk)))
        for chunk in chunks(blocks)
    ]

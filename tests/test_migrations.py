"""Migrations on a database that holds data: what an upgrade must carry over."""

import asyncio
from dataclasses import dataclass
import json
import logging
from datetime import UTC, datetime

import httpx
import pytest
from alembic import command
from sqlalchemy import inspect, text

from app.server.app import create_app
from app.migrate import alembic_config, upgrade
from app.runtime import Runtime
from app.settings import Settings
from tests.conftest import BACKENDS, OPERATOR_KEY, Api, _drop_postgres_database, _postgres_database
from tests.graph.conftest import mobility_network

RECORD = """mutation($events: [UsageInput!]!) { recordUsage(events: $events) { accepted } }"""
CONSUMERS = """{ network { parties(kind: CONSUMER) { edges { node { id name } } } } }"""
BY_CONSUMER = """query($c: ID!, $a: String) { usageEvents(consumerId: $c, first: 2, after: $a) {
  edges { node { idempotencyKey } } pageInfo { hasNextPage endCursor } } }"""


@dataclass
class Migrated:
    url: str
    rt: Runtime
    api: Api


@pytest.fixture(params=BACKENDS)
async def migrated(request, tmp_path):
    """A database of its own at the newest revision, with the API over it: each test records data,
    takes the database down a few revisions and up again."""
    if request.param == "postgres":
        url, name = await _postgres_database()
    else:
        url, name = f"sqlite+aiosqlite:///{tmp_path / 'shareflow.db'}", None
    rt = Runtime.from_settings(Settings(database_url=url, operator_key=OPERATOR_KEY, auth_cache_seconds=0))
    try:
        await upgrade(rt.engine)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(rt=rt)), base_url="http://shareflow.test") as client:
            yield Migrated(url, rt, Api(client))
    finally:
        await rt.close()
        if name:
            await _drop_postgres_database(name)


async def _tables(rt: Runtime) -> dict[str, set[str]]:
    async with rt.engine.connect() as connection:
        return await connection.run_sync(
            lambda sync: {table: {c["name"] for c in inspect(sync).get_columns(table)} for table in inspect(sync).get_table_names()}
        )


async def test_events_stored_before_the_blocks_of_ids_are_found_by_consumer_after_the_upgrade(migrated):
    """Revision 0004 gives usage_events their blocks of ids and fills consumer_blocks from the
    events already stored; its downgrade takes both away. Events recorded, the database taken
    down to 0003 and up again: usageEvents(consumerId) pages through each consumer's events."""
    url, rt, api = migrated.url, migrated.rt, migrated.api
    mobility = await mobility_network(api)
    at = datetime.now(UTC).replace(microsecond=0).isoformat()
    events = [
        {"idempotencyKey": f"k{i}", "serviceId": mobility.service_id, "consumerRef": ("ann", "bo")[i % 2],
         "metric": "minutes", "quantity": "1", "occurredAt": at}
        for i in range(7)
    ]
    assert (await api.data(RECORD, {"events": events}, mobility.citycar.key))["recordUsage"]["accepted"] == 7

    await rt.engine.dispose()
    await asyncio.to_thread(command.downgrade, alembic_config(url), "0003")
    tables = await _tables(rt)
    assert "consumer_blocks" not in tables and "id_block" not in tables["usage_events"]
    await rt.engine.dispose()
    await asyncio.to_thread(command.upgrade, alembic_config(url), "head")

    consumers = (await api.data(CONSUMERS, key=mobility.net.owner.key))["network"]["parties"]["edges"]
    for consumer in consumers:
        seen, after = [], None
        while True:
            page = (await api.data(BY_CONSUMER, {"c": consumer["node"]["id"], "a": after}, mobility.net.owner.key))["usageEvents"]
            seen += [edge["node"]["idempotencyKey"] for edge in page["edges"]]
            if not page["pageInfo"]["hasNextPage"]:
                break
            after = page["pageInfo"]["endCursor"]
        first = 0 if consumer["node"]["name"] == "ann" else 1
        assert seen == [f"k{i}" for i in range(first, 7, 2)]


RECORD_STATUSES = """mutation($events: [UsageInput!]!) { recordUsage(events: $events) { results { status } } }"""
KEYS = """{ usageEvents(first: 100) { edges { node { idempotencyKey service { name } } } } }"""


async def test_keys_stored_before_they_were_scoped_per_service_keep_deciding_duplicates(migrated):
    """Revision 0005 makes idempotency keys unique per service. Events recorded, the database
    taken down to 0004 (keys unique per network) and up again: the events keep their keys, a
    re-send is a duplicate, and a second service may now use the same key."""
    url, rt, api = migrated.url, migrated.rt, migrated.api
    mobility = await mobility_network(api)
    owner = mobility.net.owner
    bikeco = await mobility.net.onboard("BikeCo", "PROVIDER")
    bikes = await mobility.net.service("Bike rental", bikeco, [{"metric": "minutes", "model": "PER_UNIT", "unitPrice": "0.17"}])
    at = datetime.now(UTC).replace(microsecond=0).isoformat()

    def usage(service_id: str, key: str) -> dict:
        return {"idempotencyKey": key, "serviceId": service_id, "consumerRef": "ann", "metric": "minutes",
                "quantity": "1", "occurredAt": at}

    before = [usage(mobility.service_id, "k1"), usage(mobility.service_id, "k2"), usage(bikes, "k3")]
    assert (await api.data(RECORD, {"events": before}, owner.key))["recordUsage"]["accepted"] == 3

    await rt.engine.dispose()
    await asyncio.to_thread(command.downgrade, alembic_config(url), "0004")
    await rt.engine.dispose()
    await asyncio.to_thread(command.upgrade, alembic_config(url), "head")

    keys = (await api.data(KEYS, key=owner.key))["usageEvents"]["edges"]
    assert sorted((e["node"]["idempotencyKey"], e["node"]["service"]["name"]) for e in keys) == [
        ("k1", "Car sharing"), ("k2", "Car sharing"), ("k3", "Bike rental")]
    again = (await api.data(RECORD_STATUSES, {"events": [*before, usage(bikes, "k1")]}, owner.key))["recordUsage"]
    assert [r["status"] for r in again["results"]] == ["DUPLICATE", "DUPLICATE", "DUPLICATE", "ACCEPTED"]


async def test_keys_stored_before_their_issuer_was_recorded_keep_working_and_new_ones_record_it(migrated):
    """Revision 0007 adds api_keys.issued_by_key_id; its downgrade takes it away. Keys issued, the
    database taken down to 0004 and up again: the old keys still work and name no issuer, so that
    revoking one takes no other with it; a key issued after the upgrade goes with its issuer."""
    from tests.graph.test_api_keys import ISSUE, KEYS, ME, REVOKE

    url, rt, api = migrated.url, migrated.rt, migrated.api
    mobility = await mobility_network(api)
    owner, partner = mobility.net.owner, mobility.parkspace
    before = (await api.data(ISSUE, {"party": partner.id}, partner.key))["issueApiKey"]["apiKey"]

    await rt.engine.dispose()
    await asyncio.to_thread(command.downgrade, alembic_config(url), "0004")
    assert "issued_by_key_id" not in (await _tables(rt))["api_keys"]
    await rt.engine.dispose()
    await asyncio.to_thread(command.upgrade, alembic_config(url), "head")

    after = (await api.data(ISSUE, {"party": partner.id}, partner.key))["issueApiKey"]["apiKey"]
    listed = (await api.data(KEYS, {"id": partner.id}, owner.key))["party"]["apiKeys"]
    [first] = [key["id"] for key in listed if partner.key.startswith(key["prefix"] + "_")]
    assert (await api.data(REVOKE, {"id": first}, owner.key))["revokeApiKey"]["errors"] == []
    assert (await api.data(ME, key=before))["me"]["party"]["name"] == "ParkSpace"
    assert await api.error_code(ME, key=after) == "UNAUTHENTICATED"


async def test_the_upgrade_lists_stored_decimals_out_of_range_and_changes_nothing(migrated, caplog):
    """Revision 0006 logs every agreement or plan value the decimal door refuses today (what an
    attack stored before it existed) and leaves them as they are; values in range go unmentioned."""
    url, rt, api = migrated.url, migrated.rt, migrated.api
    await mobility_network(api)
    forty_digits = "1" + "0" * 39
    tiers = [{"upTo": "10000000000000", "unitPrice": "0.1", "flatFee": "0"}, {"upTo": None, "unitPrice": "0.1", "flatFee": "0"}]
    async with rt.engine.begin() as connection:
        agreement = (await connection.execute(text("SELECT min(id) FROM agreements"))).scalar()
        await connection.execute(text("UPDATE agreements SET amount = :a WHERE id = :id"), {"a": forty_digits, "id": agreement})
        plan = (await connection.execute(text("SELECT min(id) FROM price_plans"))).scalar()
        charges = [{"metric": "minutes", "model": "PER_UNIT", "unitPrice": "1E+5"}, {"metric": "calls", "model": "GRADUATED", "tiers": tiers}]
        await connection.execute(text("UPDATE price_plans SET charges = :c WHERE id = :id"), {"c": json.dumps(charges), "id": plan})
    await rt.engine.dispose()
    await asyncio.to_thread(command.downgrade, alembic_config(url), "0004")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="shareflow.migrations"):
        await asyncio.to_thread(command.upgrade, alembic_config(url), "head")
    listed = [r.getMessage() for r in caplog.records if r.name == "shareflow.migrations"]
    assert listed == [
        f"out-of-range decimal: agreements id={agreement} network=1 amount='{forty_digits}' (40 characters)",
        f"out-of-range decimal: price_plans id={plan} network=1 charges.0.unitPrice='1E+5' (4 characters)",
        f"out-of-range decimal: price_plans id={plan} network=1 charges.1.tiers.0.upTo='10000000000000' (14 characters)",
    ]
    async with rt.engine.connect() as connection:
        stored = (await connection.execute(text("SELECT amount FROM agreements WHERE id = :id"), {"id": agreement})).scalar()
    assert stored == forty_digits

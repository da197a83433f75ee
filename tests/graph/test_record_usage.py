import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

RECORD = """
mutation($events: [UsageInput!]!) {
  recordUsage(events: $events) {
    accepted duplicates rejected
    results { index status event { idempotencyKey quantity metric consumer { name } } errors { field code } }
    errors { field code }
  }
}"""
REVENUE = """query($id: ID!) { service(id: $id) { revenue { amount currency } } }"""
EVENTS = """{ usageEvents(first: 100) { edges { node { idempotencyKey quantity voided } } } }"""


def event(service_id: str, key: str, **overrides) -> dict:
    return {
        "idempotencyKey": key,
        "serviceId": service_id,
        "consumerRef": "alice",
        "metric": "minutes",
        "quantity": "30",
        "occurredAt": datetime.now(UTC).replace(microsecond=0).isoformat(),
        **overrides,
    }


async def record(api, key_of, events):
    return (await api.data(RECORD, {"events": events}, key_of))["recordUsage"]


async def revenue(api, mobility) -> str:
    return (await api.data(REVENUE, {"id": mobility.service_id}, mobility.net.owner.key))["service"]["revenue"]["amount"]


async def test_the_provider_records_a_rental_and_the_revenue_follows(api, mobility):
    sid = mobility.service_id
    payload = await record(api, mobility.citycar.key, [event(sid, "r1-minutes"), event(sid, "r1-rental", metric="rental", quantity="1")])
    assert (payload["accepted"], payload["duplicates"], payload["rejected"]) == (2, 0, 0)
    assert payload["results"][0]["event"] == {"idempotencyKey": "r1-minutes", "quantity": "30", "metric": "minutes", "consumer": {"name": "alice"}}
    assert await revenue(api, mobility) == "9.70"


async def test_the_same_key_and_payload_is_a_duplicate_that_returns_the_original(api, mobility):
    first = event(mobility.service_id, "k1")
    await record(api, mobility.citycar.key, [first])
    again = await record(api, mobility.citycar.key, [first])
    assert (again["accepted"], again["duplicates"]) == (0, 1)
    assert again["results"][0]["status"] == "DUPLICATE"
    assert again["results"][0]["event"]["idempotencyKey"] == "k1"
    assert await revenue(api, mobility) == "8.70"


async def test_the_same_key_with_another_payload_is_a_conflict(api, mobility):
    await record(api, mobility.citycar.key, [event(mobility.service_id, "k1")])
    payload = await record(api, mobility.citycar.key, [event(mobility.service_id, "k1", quantity="31")])
    assert payload["results"][0]["status"] == "REJECTED"
    assert payload["results"][0]["errors"] == [{"field": ["events", "0", "idempotencyKey"], "code": "IDEMPOTENCY_CONFLICT"}]
    assert await revenue(api, mobility) == "8.70"


async def test_a_key_twice_in_one_batch_is_stored_once(api, mobility):
    e = event(mobility.service_id, "twice")
    payload = await record(api, mobility.citycar.key, [e, e])
    assert [r["status"] for r in payload["results"]] == ["ACCEPTED", "DUPLICATE"]
    assert await revenue(api, mobility) == "8.70"


async def test_the_owner_may_record_but_a_partner_is_forbidden_per_item(api, mobility):
    sid = mobility.service_id
    assert (await record(api, mobility.net.owner.key, [event(sid, "by-owner")]))["accepted"] == 1
    payload = await record(api, mobility.helpdesk.key, [event(sid, "by-partner")])
    assert payload["results"][0]["errors"] == [{"field": ["events", "0", "serviceId"], "code": "FORBIDDEN"}]
    assert await revenue(api, mobility) == "8.70"


async def test_another_networks_owner_finds_no_such_service(api, mobility):
    from tests.graph.conftest import new_network

    other = await new_network(api, "Other")
    payload = await record(api, other.owner.key, [event(mobility.service_id, "intruder")])
    assert payload["results"][0]["errors"] == [{"field": ["events", "0", "serviceId"], "code": "NOT_FOUND"}]


RECORD_WITH_MESSAGES = """mutation($events: [UsageInput!]!) { recordUsage(events: $events) {
  accepted duplicates rejected results { index status event { idempotencyKey } errors { field code message } }
  errors { field code message } } }"""


async def bike_rental(api, mobility) -> tuple[object, str]:
    """BikeCo's service, billed by the owner: in no value chain of CityCar's or HelpDesk24's."""
    bikeco = await mobility.net.onboard("BikeCo", "PROVIDER")
    return bikeco, await mobility.net.service("Bike rental", bikeco, [{"metric": "minutes", "model": "PER_UNIT", "unitPrice": "0.17"}])


async def test_a_service_the_caller_cannot_see_answers_as_one_that_does_not_exist(api, mobility):
    """CityCar and HelpDesk24 cannot see Bike rental: recording on it answers exactly as on a
    forged id, and nothing is written."""
    from graph.ids import to_global_id

    _, bikes = await bike_rental(api, mobility)
    for caller in (mobility.citycar, mobility.helpdesk):
        hidden = (await api.data(RECORD_WITH_MESSAGES, {"events": [event(bikes, "probe")]}, caller.key))["recordUsage"]
        forged = (await api.data(RECORD_WITH_MESSAGES, {"events": [event(to_global_id("Service", 10**12), "probe")]}, caller.key))["recordUsage"]
        assert hidden == forged
        assert hidden["results"][0]["errors"] == [{"field": ["events", "0", "serviceId"], "code": "NOT_FOUND", "message": "service not found"}]
    assert (await api.data(EVENTS, key=mobility.net.owner.key))["usageEvents"]["edges"] == []


async def test_two_providers_use_the_same_key_each_on_its_own_service(api, mobility):
    """Keys are unique per service: BikeCo's ride-1 is no conflict with CityCar's (nor tells BikeCo
    of it), a re-send is a duplicate of its own service's event, and the owner recording the same
    events stores nothing twice."""
    bikeco, bikes = await bike_rental(api, mobility)
    car, bike = event(mobility.service_id, "ride-1"), event(bikes, "ride-1", quantity="12")
    assert [r["status"] for r in (await record(api, mobility.citycar.key, [car]))["results"]] == ["ACCEPTED"]
    assert [r["status"] for r in (await record(api, bikeco.key, [bike]))["results"]] == ["ACCEPTED"]
    for key, sent in ((mobility.citycar.key, car), (bikeco.key, bike)):
        again = (await record(api, key, [sent]))["results"]
        assert [(r["status"], r["event"]["quantity"]) for r in again] == [("DUPLICATE", sent["quantity"])]
    by_owner = (await record(api, mobility.net.owner.key, [car, bike, event(mobility.service_id, "ride-2"), event(bikes, "ride-2")]))
    assert [r["status"] for r in by_owner["results"]] == ["DUPLICATE", "DUPLICATE", "ACCEPTED", "ACCEPTED"]
    conflict = (await record(api, bikeco.key, [event(bikes, "ride-1", quantity="13")]))["results"]
    assert conflict[0]["errors"] == [{"field": ["events", "0", "idempotencyKey"], "code": "IDEMPOTENCY_CONFLICT"}]
    keys = sorted(e["node"]["idempotencyKey"] for e in (await api.data(EVENTS, key=mobility.net.owner.key))["usageEvents"]["edges"])
    assert keys == ["ride-1", "ride-1", "ride-2", "ride-2"]
    assert await revenue(api, mobility) == "17.40"


def ten_minutes_ahead() -> str:
    """Taken when the test runs, not when the module is collected: a run of the suite outlasts
    the 5 minutes of tolerance."""
    return (datetime.now(UTC) + timedelta(minutes=10)).isoformat()


@pytest.mark.parametrize(
    ("overrides", "field", "code"),
    [
        ({"quantity": "-1"}, "quantity", "INVALID"),
        ({"quantity": "1.0000001"}, "quantity", "TOO_MANY_DECIMALS"),
        ({"quantity": "1000000001"}, "quantity", "QUANTITY_OVERFLOW"),
        ({"quantity": "NaN"}, "quantity", "INVALID"),
        ({"quantity": "Infinity"}, "quantity", "INVALID"),
        ({"metric": "parsecs"}, "metric", "UNKNOWN_METRIC"),
        ({"serviceId": "U2VydmljZTo5OTk5OTk="}, "serviceId", "NOT_FOUND"),
        ({"serviceId": "garbage"}, "serviceId", "NOT_FOUND"),
        ({"occurredAt": ten_minutes_ahead}, "occurredAt", "INVALID"),
        ({"occurredAt": "9999-12-31T23:59:59Z"}, "occurredAt", "INVALID"),
        ({"occurredAt": "2026-11-20T10:00:00"}, "occurredAt", "INVALID"),
        ({"occurredAt": "2001-01-01T00:00:00Z"}, "occurredAt", "BEFORE_FIRST_PERIOD"),
        ({"occurredAt": "1969-12-31T23:00:00Z"}, "occurredAt", "BEFORE_FIRST_PERIOD"),
        ({"occurredAt": "0001-01-01T00:00:00+01:00"}, "occurredAt", "BEFORE_FIRST_PERIOD"),
        ({"idempotencyKey": ""}, "idempotencyKey", "INVALID"),
        ({"idempotencyKey": "k" * 300}, "idempotencyKey", "INVALID"),
        ({"consumerRef": ""}, "consumerRef", "INVALID"),
        ({"idempotencyKey": "   "}, "idempotencyKey", "INVALID"),
        ({"consumerRef": "bell\x07"}, "consumerRef", "INVALID"),
        ({"quantity": "1E-7"}, "quantity", "INVALID"),
    ],
    ids=[
        "negative", "seven-decimals", "above-a-billion", "nan", "infinity", "uncharged-metric", "unknown-service",
        "malformed-service-id", "future", "last-period-of-9999", "no-time-zone", "before-first-period", "before-1970", "before-year-one-in-utc", "empty-key", "300-char-key", "empty-consumer",
        "blank-key", "control-character", "exponent",
    ],
)
async def test_a_bad_item_is_rejected_with_its_path_while_the_rest_of_the_batch_is_accepted(api, mobility, overrides, field, code):
    sid = mobility.service_id
    overrides = {name: value() if callable(value) else value for name, value in overrides.items()}
    payload = await record(api, mobility.citycar.key, [event(sid, "good"), event(sid, "bad", **overrides)])
    assert [r["status"] for r in payload["results"]] == ["ACCEPTED", "REJECTED"]
    assert {"field": ["events", "1", field], "code": code} in payload["results"][1]["errors"]
    keys = [e["node"]["idempotencyKey"] for e in (await api.data(EVENTS, key=mobility.net.owner.key))["usageEvents"]["edges"]]
    assert keys == ["good"]
    assert await revenue(api, mobility) == "8.70"


async def test_an_item_with_several_problems_reports_each_in_the_order_of_its_fields(api, mobility):
    payload = await record(api, mobility.citycar.key, [
        event("garbage", "", consumerRef="", quantity="-1", occurredAt=ten_minutes_ahead()),
        event(mobility.service_id, " ", occurredAt="2026-11-20T10:00:00"),
    ])
    assert [r["status"] for r in payload["results"]] == ["REJECTED", "REJECTED"]
    assert [(e["field"][2], e["code"]) for e in payload["results"][0]["errors"]] == [
        ("idempotencyKey", "INVALID"), ("serviceId", "NOT_FOUND"), ("consumerRef", "INVALID"),
        ("quantity", "INVALID"), ("occurredAt", "INVALID"),
    ]
    assert [(e["field"][2], e["code"]) for e in payload["results"][1]["errors"]] == [("idempotencyKey", "INVALID"), ("occurredAt", "INVALID")]
    assert (await api.data(EVENTS, key=mobility.net.owner.key))["usageEvents"]["edges"] == []


async def test_trailing_zeros_and_non_ascii_references_are_accepted(api, mobility):
    sid = mobility.service_id
    payload = await record(api, mobility.citycar.key, [
        event(sid, "z1", quantity="1.5000000000"), event(sid, "Schlüssel\u00a02", consumerRef="Zoë\u00a0Müller", metric="rental", quantity="1"),
    ])
    assert [r["status"] for r in payload["results"]] == ["ACCEPTED", "ACCEPTED"]
    assert payload["results"][0]["event"]["quantity"] == "1.5"
    assert payload["results"][1]["event"]["consumer"] == {"name": "Zoë\u00a0Müller"}


async def test_a_batch_above_5000_events_is_refused_whole(api, mobility):
    sid = mobility.service_id
    body = await api.post(RECORD, {"events": [event(sid, f"k{i}") for i in range(5001)]}, mobility.citycar.key)
    assert body["data"] is None
    assert [(e["extensions"]["code"], e["extensions"]["field"]) for e in body["errors"]] == [("BATCH_TOO_LARGE", ["events"])]
    assert (await api.data(EVENTS, key=mobility.net.owner.key))["usageEvents"]["edges"] == []


async def test_a_consumer_reference_belongs_to_its_merchant_of_record(api, mobility):
    net = mobility.net
    reseller = await net.onboard("Reseller")
    resold = await net.service("Resold cars", mobility.citycar, [{"metric": "minutes", "model": "PER_UNIT", "unitPrice": "0.30"}], billed_by=reseller)
    await record(api, mobility.citycar.key, [event(mobility.service_id, "a1"), event(resold, "a2")])
    consumers = (await api.data("{ network { parties(kind: CONSUMER) { edges { node { name } } } } }", key=net.owner.key))["network"]["parties"]["edges"]
    assert [c["node"]["name"] for c in consumers] == ["alice", "alice"]


async def test_twenty_concurrent_requests_with_one_key_store_one_event(api, mobility):
    e = event(mobility.service_id, "raced")
    payloads = await asyncio.gather(*(record(api, mobility.citycar.key, [e]) for _ in range(20)))
    assert sorted(p["results"][0]["status"] for p in payloads) == ["ACCEPTED"] + ["DUPLICATE"] * 19
    assert await revenue(api, mobility) == "8.70"


async def test_usage_events_are_consumer_data_hidden_from_other_partners(api, mobility):
    await record(api, mobility.citycar.key, [event(mobility.service_id, f"k{i}") for i in range(3)])
    page = (await api.data("{ usageEvents(first: 2) { edges { cursor node { idempotencyKey } } pageInfo { hasNextPage endCursor } } }", key=mobility.citycar.key))["usageEvents"]
    assert [e["node"]["idempotencyKey"] for e in page["edges"]] == ["k0", "k1"] and page["pageInfo"]["hasNextPage"]
    rest = (await api.data("query($a: String) { usageEvents(first: 2, after: $a) { edges { node { idempotencyKey } } pageInfo { hasNextPage } } }", {"a": page["pageInfo"]["endCursor"]}, mobility.citycar.key))["usageEvents"]
    assert [e["node"]["idempotencyKey"] for e in rest["edges"]] == ["k2"] and not rest["pageInfo"]["hasNextPage"]
    assert (await api.data(EVENTS, key=mobility.fleetcare.key))["usageEvents"]["edges"] == []
    hidden = (await api.data(REVENUE, {"id": mobility.service_id}, mobility.fleetcare.key))["service"]
    assert hidden == {"revenue": None}


async def test_events_written_in_the_document_are_recorded_like_variables(api, mobility):
    """Literals reach the resolver as graphql-core coerced them, as variables do: a Decimal
    quantity, an aware occurredAt, a service id to decode."""
    at = datetime.now(UTC).replace(microsecond=0).isoformat()
    document = f"""mutation {{ recordUsage(events: [
      {{idempotencyKey: "lit-1", serviceId: "{mobility.service_id}", consumerRef: "alice", metric: "minutes", quantity: "30", occurredAt: "{at}"}},
      {{idempotencyKey: "lit-2", serviceId: "{mobility.service_id}", consumerRef: "alice", metric: "minutes", quantity: "-1", occurredAt: "{at}"}}
    ]) {{ accepted rejected results {{ status event {{ quantity }} errors {{ field code }} }} }} }}"""
    payload = (await api.data(document, {}, mobility.citycar.key))["recordUsage"]
    assert (payload["accepted"], payload["rejected"]) == (1, 1)
    assert payload["results"][0] == {"status": "ACCEPTED", "event": {"quantity": "30"}, "errors": []}
    assert payload["results"][1]["errors"] == [{"field": ["events", "1", "quantity"], "code": "INVALID"}]
    assert await revenue(api, mobility) == "8.70"


async def test_a_consumers_events_come_by_consumer_in_the_order_of_their_ids_across_blocks_of_ids(api, rt, mobility):
    """usageEvents(consumerId) searches the consumer's blocks of ids (models.usage.EVENT_BLOCK):
    pages of a consumer with a few events among more than two blocks of others' hold exactly its
    events, in the order of their ids, the cursor carrying from block to block, and a page of
    100 gathers them from every block."""
    from sqlalchemy import select

    from app.auth import identify
    from app.ingest.items import UsageItem
    from app.ingest.record import record_usage
    from graph.ids import service_row_id, to_global_id
    from models import Party, UsageEvent
    from models.usage import EVENT_BLOCK

    service_id = service_row_id(mobility.service_id)
    now = datetime.now(UTC).replace(microsecond=0)
    items = [UsageItem(f"b{i}", service_id, "dora" if i % 4001 == 7 else f"c{i % 5}", "minutes", Decimal(1), now) for i in range(2 * EVENT_BLOCK + 4002)]
    principal = (await identify(rt.sessions, f"Bearer {mobility.citycar.key}", rt.settings.operator_key, rt.keys)).principal
    assert (await record_usage(rt, principal, items, max_batch=None)).count("ACCEPTED") == len(items)
    async with rt.sessions() as session:
        dora = await session.scalar(select(Party.id).where(Party.network_id == principal.network_id, Party.external_ref == "dora"))
        stored = list(await session.execute(select(UsageEvent.id, UsageEvent.idempotency_key).where(UsageEvent.consumer_id == dora).order_by(UsageEvent.id)))
    assert len({event_id // EVENT_BLOCK for event_id, _ in stored}) >= 3  # 36,009 ids apart

    query = """query($c: ID, $a: String, $s: ID, $n: Int) { usageEvents(consumerId: $c, serviceId: $s, first: $n, after: $a) {
      edges { node { idempotencyKey consumer { name } } } pageInfo { hasNextPage endCursor } } }"""
    for service, size in ((None, 3), (mobility.service_id, 3), (mobility.service_id, 100)):
        seen, after = [], None
        while True:
            variables = {"c": to_global_id("Party", dora), "a": after, "s": service, "n": size}
            page = (await api.data(query, variables, mobility.net.owner.key))["usageEvents"]
            seen += [(e["node"]["idempotencyKey"], e["node"]["consumer"]["name"]) for e in page["edges"]]
            if not page["pageInfo"]["hasNextPage"]:
                break
            after = page["pageInfo"]["endCursor"]
        assert seen == [(key, "dora") for _, key in stored]

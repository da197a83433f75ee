from graph.ids import to_global_id
from tests.graph.test_record_usage import EVENTS, bike_rental, event, record, revenue

VOID = """mutation($key: String!) { voidUsage(idempotencyKey: $key) { event { idempotencyKey voided voidedAt } errors { field code } } }"""
FLOWS = """query($p: String!) { revenueFlows(period: $p) { payer { name } payee { name } amount { amount } } }"""


async def test_a_voided_rental_stops_counting_in_revenue_and_flows(api, mobility):
    sid = mobility.service_id
    first = event(sid, "m")
    await record(api, mobility.citycar.key, [first, event(sid, "r", metric="rental", quantity="1", occurredAt=first["occurredAt"])])
    payload = (await api.data(VOID, {"key": "r"}, mobility.citycar.key))["voidUsage"]
    assert payload["errors"] == [] and payload["event"]["voided"] is True
    assert await revenue(api, mobility) == "8.70"
    period = first["occurredAt"][:7]
    flows = (await api.data(FLOWS, {"p": period}, mobility.net.owner.key))["revenueFlows"]
    fleetcare = [f["amount"]["amount"] for f in flows if f["payee"]["name"] == "FleetCare"]
    assert fleetcare == ["0.00"]


async def test_voiding_twice_says_so_and_changes_nothing(api, mobility):
    await record(api, mobility.citycar.key, [event(mobility.service_id, "m")])
    await api.data(VOID, {"key": "m"}, mobility.citycar.key)
    again = (await api.data(VOID, {"key": "m"}, mobility.citycar.key))["voidUsage"]
    assert again["errors"] == [{"field": ["idempotencyKey"], "code": "ALREADY_VOIDED"}]
    assert await revenue(api, mobility) == "0.00"


async def test_a_partner_cannot_void_what_it_may_not_record(api, mobility):
    await record(api, mobility.citycar.key, [event(mobility.service_id, "m")])
    payload = (await api.data(VOID, {"key": "m"}, mobility.helpdesk.key))["voidUsage"]
    assert payload == {"event": None, "errors": [{"field": ["idempotencyKey"], "code": "NOT_FOUND"}]}
    assert await revenue(api, mobility) == "8.70"


VOID_ON = """mutation($key: String!, $sid: ID) { voidUsage(idempotencyKey: $key, serviceId: $sid) {
  event { idempotencyKey voided service { name } } errors { field code message } } }"""


async def _voided(api, mobility) -> list[tuple[str, bool]]:
    edges = (await api.data(EVENTS, key=mobility.net.owner.key))["usageEvents"]["edges"]
    return sorted((e["node"]["idempotencyKey"] + "@" + str(e["node"]["quantity"]), e["node"]["voided"]) for e in edges)


async def test_a_key_used_on_two_services_is_voided_by_naming_the_service(api, mobility):
    """CityCar and BikeCo both use key r. Each provider voids its own without naming a service
    (only the services it records on are searched); the owner, who records on both, must name the
    service (AMBIGUOUS_IDEMPOTENCY_KEY on serviceId, nothing voided), and naming it voids that one."""
    bikeco, bikes = await bike_rental(api, mobility)
    await record(api, mobility.citycar.key, [event(mobility.service_id, "r")])
    await record(api, bikeco.key, [event(bikes, "r", quantity="12")])
    await record(api, bikeco.key, [event(bikes, "s", quantity="5")])

    ambiguous = (await api.data(VOID_ON, {"key": "r"}, mobility.net.owner.key))["voidUsage"]
    assert ambiguous["event"] is None
    assert [(e["field"], e["code"]) for e in ambiguous["errors"]] == [(["serviceId"], "AMBIGUOUS_IDEMPOTENCY_KEY")]
    assert await _voided(api, mobility) == [("r@12", False), ("r@30", False), ("s@5", False)]

    mine = (await api.data(VOID_ON, {"key": "r"}, bikeco.key))["voidUsage"]
    assert mine["errors"] == [] and mine["event"] == {"idempotencyKey": "r", "voided": True, "service": {"name": "Bike rental"}}
    assert await _voided(api, mobility) == [("r@12", True), ("r@30", False), ("s@5", False)]
    assert await revenue(api, mobility) == "8.70"

    named = (await api.data(VOID_ON, {"key": "r", "sid": mobility.service_id}, mobility.net.owner.key))["voidUsage"]
    assert named["errors"] == [] and named["event"]["service"] == {"name": "Car sharing"}
    assert await revenue(api, mobility) == "0.00"
    by_owner = (await api.data(VOID_ON, {"key": "s"}, mobility.net.owner.key))["voidUsage"]
    assert by_owner["errors"] == [] and by_owner["event"]["service"] == {"name": "Bike rental"}


async def test_voiding_on_a_service_the_caller_may_not_record_on_finds_nothing(api, mobility):
    """CityCar naming BikeCo's service, or a forged one, gets the answer of an unknown key."""
    bikeco, bikes = await bike_rental(api, mobility)
    await record(api, bikeco.key, [event(bikes, "r", quantity="12")])
    answers = [(await api.data(VOID_ON, {"key": "r", "sid": sid}, mobility.citycar.key))["voidUsage"]
               for sid in (bikes, to_global_id("Service", 10**12), None)]
    assert answers == [{"event": None, "errors": [{"field": ["idempotencyKey"], "code": "NOT_FOUND", "message": "usage event not found"}]}] * 3
    assert await _voided(api, mobility) == [("r@12", False)]

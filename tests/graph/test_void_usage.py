from tests.graph.test_record_usage import event, record, revenue

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

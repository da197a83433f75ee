"""valueChain: who takes part in a service and the agreements between them, as far as the caller may see."""

from sqlalchemy import event

from graph.ids import to_global_id
from tests.graph.conftest import CAR_SHARING_CHARGES, new_network

VALUE_CHAIN = """
query($id: ID!, $period: String) {
  valueChain(serviceId: $id, period: $period) {
    service { name }
    parties { name kind }
    agreements { payer { name } payee { name } rule { kind percent amount metric base priority } }
  }
}"""

SHAPE_ONLY = """
query($id: ID!) {
  valueChain(serviceId: $id) {
    parties { name }
    agreements { payer { name } payee { name } service { name } rule { kind } }
  }
}"""

SERVICE_CHAIN = """
query($id: ID!, $period: String) { service(id: $id) { valueChain(period: $period) { agreements { payee { name } } } } }"""

MOBILITY_PARTIES = [
    {"name": "Mobility owner", "kind": "OWNER"},
    {"name": "CityCar", "kind": "PROVIDER"},
    {"name": "HelpDesk24", "kind": "PARTNER"},
    {"name": "ParkSpace", "kind": "PARTNER"},
    {"name": "FleetCare", "kind": "PARTNER"},
    {"name": "CallCenter Nord", "kind": "PARTNER"},
]


def _rule(kind, percent=None, amount=None, metric=None, base=None):
    return {"kind": kind, "percent": percent, "amount": amount, "metric": metric, "base": base, "priority": 100}


MOBILITY_AGREEMENTS = [
    ("Mobility owner", "HelpDesk24", _rule("PERCENT", percent="2", base="GROSS")),
    ("Mobility owner", "ParkSpace", _rule("PER_UNIT", amount="0.02", metric="minutes")),
    ("Mobility owner", "CityCar", _rule("PERCENT", percent="85", base="GROSS")),
    ("CityCar", "FleetCare", _rule("PER_EVENT", amount="0.50", metric="rental")),
    ("HelpDesk24", "CallCenter Nord", _rule("PERCENT", percent="40", base="GROSS")),
]


def _agreements(chain: dict) -> list[tuple]:
    return [(a["payer"]["name"], a["payee"]["name"], a["rule"]) for a in chain["agreements"]]


async def test_the_owner_sees_every_party_and_every_rule(api, mobility):
    chain = (await api.data(VALUE_CHAIN, {"id": mobility.service_id}, mobility.net.owner.key))["valueChain"]
    assert chain["service"] == {"name": "Car sharing"}
    assert chain["parties"] == MOBILITY_PARTIES
    assert _agreements(chain) == MOBILITY_AGREEMENTS


async def test_a_partner_sees_the_whole_chain_but_only_its_own_rules(api, mobility):
    chain = (await api.data(VALUE_CHAIN, {"id": mobility.service_id}, mobility.helpdesk.key))["valueChain"]
    assert chain["parties"] == MOBILITY_PARTIES
    mine = {("Mobility owner", "HelpDesk24"), ("HelpDesk24", "CallCenter Nord")}
    assert _agreements(chain) == [
        (payer, payee, rule if (payer, payee) in mine else None) for payer, payee, rule in MOBILITY_AGREEMENTS
    ]


async def test_a_provider_sees_the_rules_it_pays_and_receives(api, mobility):
    chain = (await api.data(VALUE_CHAIN, {"id": mobility.service_id}, mobility.citycar.key))["valueChain"]
    visible = [(payer, payee) for payer, payee, rule in _agreements(chain) if rule is not None]
    assert visible == [("Mobility owner", "CityCar"), ("CityCar", "FleetCare")]


async def test_a_party_of_another_network_gets_null(api, mobility):
    other = await new_network(api, "Other")
    body = await api.post(VALUE_CHAIN, {"id": mobility.service_id}, other.owner.key)
    assert body == {"data": {"valueChain": None}}
    outsider = await other.onboard("Outsider")
    assert await api.post(VALUE_CHAIN, {"id": mobility.service_id}, outsider.key) == {"data": {"valueChain": None}}


async def test_a_partner_outside_the_chain_gets_null(api, mobility):
    stranger = await mobility.net.onboard("Stranger")
    assert await api.post(VALUE_CHAIN, {"id": mobility.service_id}, stranger.key) == {"data": {"valueChain": None}}


async def test_an_unknown_service_is_null_and_a_malformed_id_a_clear_error(api, mobility):
    key = mobility.net.owner.key
    assert await api.post(VALUE_CHAIN, {"id": to_global_id("Service", 10**12)}, key) == {"data": {"valueChain": None}}
    body = await api.post(VALUE_CHAIN, {"id": mobility.citycar.id}, key)
    assert body["data"] == {"valueChain": None}
    assert [(e["extensions"]["code"], e["extensions"]["field"]) for e in body["errors"]] == [("NOT_FOUND", ["serviceId"])]


async def test_the_chain_of_a_period_holds_the_agreements_in_force_then(api, mobility):
    key = mobility.net.owner.key
    assert (await api.data(VALUE_CHAIN, {"id": mobility.service_id, "period": "2020-01"}, key))["valueChain"] == {
        "service": {"name": "Car sharing"},
        "parties": MOBILITY_PARTIES[:2],
        "agreements": [],
    }
    nested = (await api.data(SERVICE_CHAIN, {"id": mobility.service_id}, key))["service"]["valueChain"]
    assert [a["payee"]["name"] for a in nested["agreements"]] == [payee for _, payee, _ in MOBILITY_AGREEMENTS]


async def test_a_malformed_period_is_refused(api, mobility):
    body = await api.post(VALUE_CHAIN, {"id": mobility.service_id, "period": "2026-1"}, mobility.net.owner.key)
    assert body["data"] == {"valueChain": None}
    assert [(e["extensions"]["code"], e["extensions"]["field"]) for e in body["errors"]] == [("INVALID_PERIOD", ["period"])]


async def _network_with_partners(api, count: int):
    net = await new_network(api, f"Chain of {count}")
    provider = await net.onboard("Provider", "PROVIDER")
    service_id = await net.service("Service", provider, CAR_SHARING_CHARGES)
    for index in range(count):
        await net.onboard(f"Partner {index}", agreements=[{"serviceId": service_id, "rule": {"kind": "PERCENT", "percent": "1"}}])
    return net, service_id


async def _statements(api, rt, query: str, variables: dict, key: str) -> tuple[dict, int]:
    """The answer to one request and the number of SQL statements the request issued."""
    statements: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    event.listen(rt.engine.sync_engine, "before_cursor_execute", count)
    try:
        data = await api.data(query, variables, key)
    finally:
        event.remove(rt.engine.sync_engine, "before_cursor_execute", count)
    return data, len(statements)


async def test_the_number_of_queries_does_not_grow_with_the_chain(api, rt):
    small, small_service = await _network_with_partners(api, 5)
    large, large_service = await _network_with_partners(api, 50)
    small_data, small_count = await _statements(api, rt, SHAPE_ONLY, {"id": small_service}, small.owner.key)
    large_data, large_count = await _statements(api, rt, SHAPE_ONLY, {"id": large_service}, large.owner.key)
    assert len(small_data["valueChain"]["agreements"]) == 5
    assert len(large_data["valueChain"]["agreements"]) == 50
    assert len(large_data["valueChain"]["parties"]) == 52
    assert small_count == large_count
    assert large_count <= 10


SERVICES_WITH_PLANS = """
{ network { services { edges { node { name charges { metric } revenue { amount } valueChain { agreements { id } } } } } } }"""


async def test_listing_services_with_plans_and_revenue_does_not_query_per_service(api, rt):
    async def network_with_services(count: int):
        net = await new_network(api, f"{count} services")
        provider = await net.onboard("Provider", "PROVIDER")
        for index in range(count):
            await net.service(f"Service {index}", provider, CAR_SHARING_CHARGES)
        return net

    few, many = await network_with_services(2), await network_with_services(12)
    few_data, few_count = await _statements(api, rt, SERVICES_WITH_PLANS, {}, few.owner.key)
    many_data, many_count = await _statements(api, rt, SERVICES_WITH_PLANS, {}, many.owner.key)
    edges = many_data["network"]["services"]["edges"]
    assert len(edges) == 12 and len(few_data["network"]["services"]["edges"]) == 2
    assert all(edge["node"]["charges"] == [{"metric": "minutes"}, {"metric": "rental"}] for edge in edges)
    assert all(edge["node"]["revenue"] == {"amount": "0.00"} for edge in edges)
    assert few_count == many_count

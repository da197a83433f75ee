"""node(id), party(id) and network { parties }: what a key may see exists for it, nothing else does."""

import base64
from datetime import datetime

import pytest

from graph.ids import to_global_id
from tests.graph.conftest import new_network

NODE = """
query($id: ID!) {
  node(id: $id) {
    __typename id
    ... on Party { name kind }
    ... on Service { name }
    ... on Agreement { payer { name } payee { name } rule { kind } }
    ... on Network { name }
  }
}"""

PARTY = """
query($id: ID!) { party(id: $id) { id name kind externalRef agreements { payee { name } } apiKeys { prefix } } }"""

PARTIES = """
query($kind: PartyKind, $first: Int, $after: String) {
  network {
    parties(kind: $kind, first: $first, after: $after) {
      edges { cursor node { name kind } }
      pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    }
  }
}"""

AGREEMENT_IDS = """
query($id: ID!) { valueChain(serviceId: $id) { agreements { id payer { name } payee { name } } } }"""


def _names(data: dict) -> list[str]:
    return [edge["node"]["name"] for edge in data["network"]["parties"]["edges"]]


@pytest.fixture
async def two_chains(api, mobility):
    """The mobility example plus a parking service whose chain HelpDesk24 is not part of."""
    net = mobility.net
    parkingco = await net.onboard("ParkingCo", "PROVIDER")
    valet = await net.onboard("Valet")
    parking = await net.service("Parking", parkingco, [{"metric": "hours", "model": "PER_UNIT", "unitPrice": "2.50"}])
    assert (await net.agree(net.owner, valet, parking, {"kind": "PERCENT", "percent": "5"}))["errors"] == []
    chain = (await api.data(AGREEMENT_IDS, {"id": parking}, net.owner.key))["valueChain"]["agreements"]
    return mobility, parking, chain[0]["id"]


async def _node(api, key: str, global_id: str):
    return (await api.data(NODE, {"id": global_id}, key))["node"]


async def test_the_owner_resolves_every_kind_of_node_of_its_network(api, two_chains):
    mobility, parking, valet_agreement = two_chains
    key = mobility.net.owner.key
    assert await _node(api, key, mobility.helpdesk.id) == {
        "__typename": "Party", "id": mobility.helpdesk.id, "name": "HelpDesk24", "kind": "PARTNER",
    }
    assert await _node(api, key, parking) == {"__typename": "Service", "id": parking, "name": "Parking"}
    assert await _node(api, key, valet_agreement) == {
        "__typename": "Agreement", "id": valet_agreement,
        "payer": {"name": "Mobility owner"}, "payee": {"name": "Valet"}, "rule": {"kind": "PERCENT"},
    }
    assert await _node(api, key, mobility.net.id) == {"__typename": "Network", "id": mobility.net.id, "name": "Mobility"}


async def test_a_partner_resolves_what_its_chain_holds_and_nothing_else(api, two_chains):
    mobility, parking, valet_agreement = two_chains
    key = mobility.helpdesk.key
    chain = (await api.data(AGREEMENT_IDS, {"id": mobility.service_id}, key))["valueChain"]["agreements"]
    fleet_leg = next(a["id"] for a in chain if a["payee"]["name"] == "FleetCare")
    assert (await _node(api, key, mobility.fleetcare.id))["name"] == "FleetCare"
    assert (await _node(api, key, mobility.net.owner.id))["kind"] == "OWNER"
    assert (await _node(api, key, mobility.service_id))["name"] == "Car sharing"
    # An agreement of its chain, without the terms it is no party to.
    assert await _node(api, key, fleet_leg) == {
        "__typename": "Agreement", "id": fleet_leg, "payer": {"name": "CityCar"}, "payee": {"name": "FleetCare"}, "rule": None,
    }
    assert (await _node(api, key, mobility.net.id))["name"] == "Mobility"
    for hidden in (mobility.net.members["Valet"].id, mobility.net.members["ParkingCo"].id, parking, valet_agreement):
        assert await api.post(NODE, {"id": hidden}, key) == {"data": {"node": None}}


async def test_another_networks_nodes_are_null(api, two_chains):
    mobility, parking, valet_agreement = two_chains
    other = await new_network(api, "Other")
    outsider = await other.onboard("Outsider")
    for key in (other.owner.key, outsider.key):
        for global_id in (mobility.helpdesk.id, mobility.net.owner.id, parking, valet_agreement, mobility.net.id):
            assert await api.post(NODE, {"id": global_id}, key) == {"data": {"node": None}}, global_id


@pytest.mark.parametrize(
    "global_id",
    [to_global_id("Party", 10**12), to_global_id("Statement", 1), to_global_id("Party", "abc"), to_global_id("Party", "9" * 19)],
    ids=["unknown row", "type without node", "key not a number", "key too long"],
)
async def test_a_well_formed_id_of_nothing_is_null(api, network, global_id):
    assert await api.post(NODE, {"id": global_id}, network.owner.key) == {"data": {"node": None}}


@pytest.mark.parametrize(
    "bad_id",
    ["garbage!", "", "x" * 500, base64.b64encode(b"no colon").decode(), base64.b64encode(b"\xff\xfe:1").decode()],
    ids=["not base64", "empty", "too long", "no type", "not utf-8"],
)
async def test_a_malformed_id_is_a_clear_error_not_a_crash(api, network, bad_id):
    for query, field in ((NODE, "node"), (PARTY, "party")):
        body = await api.post(query, {"id": bad_id}, network.owner.key)
        assert body["data"] == {field: None}
        assert [(e["extensions"]["code"], e["extensions"]["field"]) for e in body["errors"]] == [("NOT_FOUND", ["id"])]
        assert "requestId" not in body["errors"][0]["extensions"]


async def test_party_answers_what_the_caller_may_see(api, two_chains):
    mobility, _, _ = two_chains
    owner_view = (await api.data(PARTY, {"id": mobility.helpdesk.id}, mobility.net.owner.key))["party"]
    assert owner_view["name"] == "HelpDesk24"
    assert [a["payee"]["name"] for a in owner_view["agreements"]] == ["HelpDesk24", "CallCenter Nord"]
    assert len(owner_view["apiKeys"]) == 1
    # HelpDesk24 sees CityCar but not its keys; it does not see ParkingCo at all.
    citycar = (await api.data(PARTY, {"id": mobility.citycar.id}, mobility.helpdesk.key))["party"]
    assert citycar["name"] == "CityCar"
    assert citycar["apiKeys"] == []
    assert await api.post(PARTY, {"id": mobility.net.members["ParkingCo"].id}, mobility.helpdesk.key) == {
        "data": {"party": None}
    }
    own = (await api.data(PARTY, {"id": mobility.helpdesk.id}, mobility.helpdesk.key))["party"]
    assert len(own["apiKeys"]) == 1
    assert mobility.helpdesk.key.startswith(own["apiKeys"][0]["prefix"] + "_")


async def test_party_of_another_network_or_of_the_wrong_type_is_null_or_not_found(api, mobility):
    other = await new_network(api, "Other")
    assert await api.post(PARTY, {"id": mobility.helpdesk.id}, other.owner.key) == {"data": {"party": None}}
    assert await api.post(PARTY, {"id": to_global_id("Party", 10**12)}, mobility.net.owner.key) == {"data": {"party": None}}
    body = await api.post(PARTY, {"id": mobility.service_id}, mobility.net.owner.key)
    assert body["data"] == {"party": None}
    assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"


async def test_partners_are_paged_with_keyset_cursors(api, network):
    names = [f"Partner {i}" for i in range(5)]
    await network.onboard("A provider", "PROVIDER")
    for name in names:
        await network.onboard(name)
    pages, after = [], None
    while True:
        page = (await api.data(PARTIES, {"kind": "PARTNER", "first": 2, "after": after}, network.owner.key))["network"]["parties"]
        pages.append(page)
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert [[edge["node"]["name"] for edge in page["edges"]] for page in pages] == [names[0:2], names[2:4], names[4:]]
    assert [(p["pageInfo"]["hasNextPage"], p["pageInfo"]["hasPreviousPage"]) for p in pages] == [
        (True, False), (True, True), (False, True),
    ]
    for page in pages:
        assert page["pageInfo"]["startCursor"] == page["edges"][0]["cursor"]
        assert page["pageInfo"]["endCursor"] == page["edges"][-1]["cursor"]
    # A cursor names a row, not a position: a partner added meanwhile does not shift the pages.
    await network.onboard("Partner 5")
    again = (await api.data(PARTIES, {"kind": "PARTNER", "first": 2, "after": pages[0]["pageInfo"]["endCursor"]}, network.owner.key))
    assert _names(again) == names[2:4]
    last = (await api.data(PARTIES, {"kind": "PARTNER", "first": 2, "after": pages[2]["pageInfo"]["endCursor"]}, network.owner.key))
    assert _names(last) == ["Partner 5"]


async def test_an_empty_page_has_no_cursors(api, network):
    page = (await api.data(PARTIES, {"kind": "CONSUMER"}, network.owner.key))["network"]["parties"]
    assert page == {
        "edges": [],
        "pageInfo": {"hasNextPage": False, "hasPreviousPage": False, "startCursor": None, "endCursor": None},
    }


@pytest.mark.parametrize(("first", "after", "code", "field"), [
    (1000, None, "INVALID", ["first"]),
    (-1, None, "INVALID", ["first"]),
    (2, "not-a-cursor", "INVALID_CURSOR", ["after"]),
])
async def test_a_page_too_large_or_a_foreign_cursor_is_refused(api, network, first, after, code, field):
    body = await api.post(PARTIES, {"first": first, "after": after}, network.owner.key)
    assert body["data"] is None
    assert [(e["extensions"]["code"], e["extensions"]["field"]) for e in body["errors"]] == [(code, field)]


async def test_a_partner_lists_only_itself_the_owner_and_its_chain(api, two_chains):
    mobility, _, _ = two_chains
    lonely = await mobility.net.onboard("Lonely")
    everyone = _names(await api.data(PARTIES, key=mobility.net.owner.key))
    assert {"ParkingCo", "Valet", "Lonely"} <= set(everyone)
    assert _names(await api.data(PARTIES, key=mobility.helpdesk.key)) == [
        "Mobility owner", "CityCar", "FleetCare", "ParkSpace", "HelpDesk24", "CallCenter Nord",
    ]
    assert _names(await api.data(PARTIES, key=mobility.net.members["Valet"].key)) == ["Mobility owner", "ParkingCo", "Valet"]
    assert _names(await api.data(PARTIES, key=lonely.key)) == ["Mobility owner", "Lonely"]
    assert _names(await api.data(PARTIES, {"kind": "PROVIDER"}, mobility.helpdesk.key)) == ["CityCar"]


SEEN_EVENTS = """query($sid: ID) { usageEvents(serviceId: $sid, first: 100) {
  edges { node { idempotencyKey recordedAt consumer { id name createdAt } } } } }"""
CONSUMER = "query($id: ID!) { party(id: $id) { name createdAt } }"


async def test_a_provider_sees_a_consumer_created_when_its_own_services_first_recorded_it(api, mobility):
    """dora rides CityCar's cars first, then BikeCo's bikes (both billed by the owner, so one
    consumer). BikeCo must not learn that dora was a customer before: to it, dora was created
    when BikeCo's first event for her was recorded; CityCar sees its own first event's time, the
    owner (her merchant of record) her own creation."""
    from tests.graph.test_record_usage import bike_rental, event, record

    bikeco, bikes = await bike_rental(api, mobility)
    car = mobility.service_id
    assert (await record(api, mobility.citycar.key, [event(car, "c1", consumerRef="dora")]))["accepted"] == 1
    assert (await record(api, bikeco.key, [event(bikes, "b1", consumerRef="dora")]))["accepted"] == 1
    assert (await record(api, bikeco.key, [event(bikes, "b2", consumerRef="dora")]))["accepted"] == 1

    async def seen_by(key: str, sid: str) -> tuple[dict[str, str], dict]:
        edges = (await api.data(SEEN_EVENTS, {"sid": sid}, key))["usageEvents"]["edges"]
        consumers = {e["node"]["consumer"]["id"]: e["node"]["consumer"] for e in edges}
        assert len(consumers) == 1
        return {e["node"]["idempotencyKey"]: e["node"]["recordedAt"] for e in edges}, next(iter(consumers.values()))

    bike_times, by_bikeco = await seen_by(bikeco.key, bikes)
    car_times, by_citycar = await seen_by(mobility.citycar.key, car)
    by_owner = (await api.data(CONSUMER, {"id": by_bikeco["id"]}, mobility.net.owner.key))["party"]
    assert by_bikeco["createdAt"] == bike_times["b1"] != bike_times["b2"]
    assert by_citycar["createdAt"] == car_times["c1"]
    when = datetime.fromisoformat
    assert when(by_owner["createdAt"]) <= when(car_times["c1"]) < when(bike_times["b1"])
    # the same through party(id), as BikeCo
    assert (await api.data(CONSUMER, {"id": by_bikeco["id"]}, bikeco.key))["party"] == {"name": "dora", "createdAt": bike_times["b1"]}

"""quote: one consumer's hypothetical usage priced and split along the value chain, writing nothing."""

from datetime import UTC, datetime

import pytest

from graph.ids import to_global_id
from tests.graph.conftest import CAR_SHARING_CHARGES, new_network

QUOTE = """
query($id: ID!, $usage: [QuoteUsageInput!]!, $period: String) {
  quote(serviceId: $id, usage: $usage, period: $period) {
    total { amount currency }
    lines { metric quantity events amount { amount currency } }
    flows { payer { name } payee { name } service { name } period amount { amount currency } adjustment originPeriod }
    retained { party { name } amount { amount currency } }
  }
}"""

ONE_RENTAL = [{"metric": "minutes", "quantity": "30"}, {"metric": "rental", "quantity": "1"}]

CHANGE_PRICE_PLAN = """
mutation($input: ChangePricePlanInput!) { changePricePlan(input: $input) { errors { field code } } }"""

SNAPSHOT = """
query($id: ID!) {
  network { parties { edges { node { id name } } } services { edges { node { id } } } }
  valueChain(serviceId: $id) { parties { name } agreements { id effectiveTo } }
}"""


def _flows(quote: dict) -> set[tuple[str, str, str]]:
    return {(f["payer"]["name"], f["payee"]["name"], f["amount"]["amount"]) for f in quote["flows"]}


def _retained(quote: dict) -> dict[str, str]:
    return {r["party"]["name"]: r["amount"]["amount"] for r in quote["retained"]}


async def _quote(api, key: str, service_id: str, usage: list[dict], period: str | None = None) -> dict:
    return (await api.data(QUOTE, {"id": service_id, "usage": usage, "period": period}, key))["quote"]


async def test_the_worked_example_comes_out_to_the_cent(api, mobility):
    quote = await _quote(api, mobility.net.owner.key, mobility.service_id, ONE_RENTAL)
    assert quote["total"] == {"amount": "9.70", "currency": "EUR"}
    assert quote["lines"] == [
        {"metric": "minutes", "quantity": "30", "events": 1, "amount": {"amount": "8.70", "currency": "EUR"}},
        {"metric": "rental", "quantity": "1", "events": 1, "amount": {"amount": "1.00", "currency": "EUR"}},
    ]
    assert _flows(quote) == {
        ("Mobility owner", "HelpDesk24", "0.19"),
        ("Mobility owner", "ParkSpace", "0.60"),
        ("Mobility owner", "CityCar", "8.25"),
        ("CityCar", "FleetCare", "0.50"),
        ("HelpDesk24", "CallCenter Nord", "0.08"),
    }
    assert len(quote["flows"]) == 5
    for flow in quote["flows"]:
        assert flow["service"] == {"name": "Car sharing"}
        assert flow["amount"]["currency"] == "EUR"
        assert flow["adjustment"] is False
        assert flow["originPeriod"] is None
    assert len({flow["period"] for flow in quote["flows"]}) == 1
    assert _retained(quote) == {
        "Mobility owner": "0.66",
        "CityCar": "7.75",
        "FleetCare": "0.50",
        "ParkSpace": "0.60",
        "HelpDesk24": "0.11",
        "CallCenter Nord": "0.08",
    }
    assert len(quote["retained"]) == 6
    assert sum(int(amount.replace(".", "")) for amount in _retained(quote).values()) == 970


async def test_several_events_of_one_metric_make_one_line(api, mobility):
    usage = [{"metric": "minutes", "quantity": "12.5"}, {"metric": "minutes", "quantity": "17.5"}, {"metric": "rental", "quantity": "1"}]
    quote = await _quote(api, mobility.net.owner.key, mobility.service_id, usage)
    assert [(l["metric"], l["quantity"], l["events"], l["amount"]["amount"]) for l in quote["lines"]] == [
        ("minutes", "30.0", 2, "8.70"),
        ("rental", "1", 1, "1.00"),
    ]
    assert quote["total"]["amount"] == "9.70"


@pytest.mark.parametrize(
    ("member", "flows", "retained"),
    [
        ("helpdesk", {("Mobility owner", "HelpDesk24", "0.19"), ("HelpDesk24", "CallCenter Nord", "0.08")}, {"HelpDesk24": "0.11"}),
        ("citycar", {("Mobility owner", "CityCar", "8.25"), ("CityCar", "FleetCare", "0.50")}, {"CityCar": "7.75"}),
        ("callcenter", {("HelpDesk24", "CallCenter Nord", "0.08")}, {"CallCenter Nord": "0.08"}),
        ("parkspace", {("Mobility owner", "ParkSpace", "0.60")}, {"ParkSpace": "0.60"}),
    ],
)
async def test_a_partner_sees_only_its_own_flows_and_what_it_keeps(api, mobility, member, flows, retained):
    quote = await _quote(api, getattr(mobility, member).key, mobility.service_id, ONE_RENTAL)
    assert quote["total"]["amount"] == "9.70"
    assert _flows(quote) == flows
    assert _retained(quote) == retained


async def test_a_quote_writes_nothing(api, mobility):
    key = mobility.net.owner.key
    before = await api.data(SNAPSHOT, {"id": mobility.service_id}, key)
    first = await _quote(api, key, mobility.service_id, ONE_RENTAL)
    assert await api.data(SNAPSHOT, {"id": mobility.service_id}, key) == before
    # As if it were the service's only usage: a second quote is the same, not added to the first.
    assert await _quote(api, key, mobility.service_id, ONE_RENTAL) == first


async def test_a_leg_without_usage_of_its_metric_is_a_flow_of_zero(api, mobility):
    """1 minute, no rental: FleetCare's 0.50 per rental comes to nothing, CallCenter's 40 % of 0.01 rounds to 0."""
    quote = await _quote(api, mobility.net.owner.key, mobility.service_id, [{"metric": "minutes", "quantity": "1"}])
    assert quote["total"]["amount"] == "0.29"
    assert _flows(quote) == {
        ("Mobility owner", "HelpDesk24", "0.01"),
        ("Mobility owner", "ParkSpace", "0.02"),
        ("Mobility owner", "CityCar", "0.25"),
        ("CityCar", "FleetCare", "0.00"),
        ("HelpDesk24", "CallCenter Nord", "0.00"),
    }
    assert sum(int(a.replace(".", "")) for a in _retained(quote).values()) == 29


BAD_USAGE = [
    ("metric not charged", [{"metric": "km", "quantity": "3"}], "UNKNOWN_METRIC", ["usage", "0", "metric"]),
    ("negative quantity", [{"metric": "minutes", "quantity": "-1"}], "INVALID", ["usage", "0", "quantity"]),
    ("NaN quantity", [{"metric": "minutes", "quantity": "NaN"}], "INVALID", ["usage", "0", "quantity"]),
    ("infinite quantity", [{"metric": "minutes", "quantity": "Infinity"}], "INVALID", ["usage", "0", "quantity"]),
    ("7 decimals", ONE_RENTAL + [{"metric": "minutes", "quantity": "0.0000001"}], "TOO_MANY_DECIMALS", ["usage", "2", "quantity"]),
    ("above 10^9 units", [{"metric": "minutes", "quantity": "1000000001"}], "QUANTITY_OVERFLOW", ["usage", "0", "quantity"]),
    ("no usage", [], "INVALID", ["usage"]),
]


@pytest.mark.parametrize(("usage", "code", "field"), [c[1:] for c in BAD_USAGE], ids=[c[0] for c in BAD_USAGE])
async def test_bad_usage_is_a_top_level_error_with_its_code_and_path(api, mobility, usage, code, field):
    body = await api.post(QUOTE, {"id": mobility.service_id, "usage": usage}, mobility.net.owner.key)
    assert body["data"] == {"quote": None}
    assert len(body["errors"]) == 1
    assert body["errors"][0]["path"] == ["quote"]
    assert body["errors"][0]["extensions"]["code"] == code
    assert body["errors"][0]["extensions"]["field"] == field


async def test_a_quantity_sent_as_a_json_number_is_refused(api, mobility):
    body = await api.post(QUOTE, {"id": mobility.service_id, "usage": [{"metric": "minutes", "quantity": 30.5}]}, mobility.net.owner.key)
    assert body["data"] is None
    assert "as strings" in body["errors"][0]["message"]


async def test_a_malformed_period_is_refused(api, mobility):
    body = await api.post(QUOTE, {"id": mobility.service_id, "usage": ONE_RENTAL, "period": "soon"}, mobility.net.owner.key)
    assert body["data"] == {"quote": None}
    assert (body["errors"][0]["extensions"]["code"], body["errors"][0]["extensions"]["field"]) == ("INVALID_PERIOD", ["period"])


async def test_a_period_before_the_first_one_is_refused(api, mobility):
    body = await api.post(QUOTE, {"id": mobility.service_id, "usage": ONE_RENTAL, "period": "2020-01"}, mobility.net.owner.key)
    assert body["data"] == {"quote": None}
    assert (body["errors"][0]["extensions"]["code"], body["errors"][0]["extensions"]["field"]) == (
        "BEFORE_FIRST_PERIOD",
        ["period"],
    )


async def test_a_later_period_is_quoted_with_the_plan_and_agreements_in_force_then(api, rt):
    rt.clock = lambda: datetime(2026, 11, 15, 12, 0, tzinfo=UTC)
    net = await new_network(api, "Mobility")
    citycar = await net.onboard("CityCar", "PROVIDER")
    service_id = await net.service("Car sharing", citycar, CAR_SHARING_CHARGES)
    payload = await net.agree(net.owner, citycar, service_id, {"kind": "PERCENT", "percent": "85"}, effectiveFrom="2027-01")
    assert payload["errors"] == []
    new_plan = [{"metric": "minutes", "model": "PER_UNIT", "unitPrice": "0.30"}, {"metric": "rental", "model": "FLAT", "unitPrice": "1.00"}]
    changed = await api.data(CHANGE_PRICE_PLAN, {"input": {"serviceId": service_id, "charges": new_plan, "effectiveFrom": "2026-12"}}, net.owner.key)
    assert changed["changePricePlan"]["errors"] == []
    quotes = {period: await _quote(api, net.owner.key, service_id, ONE_RENTAL, period) for period in (None, "2026-12", "2027-01")}
    assert {period: (q["total"]["amount"], _flows(q)) for period, q in quotes.items()} == {
        None: ("9.70", set()),
        "2026-12": ("10.00", set()),
        "2027-01": ("10.00", {("Mobility owner", "CityCar", "8.50")}),
    }
    assert [flow["period"] for flow in quotes["2027-01"]["flows"]] == ["2027-01"]


async def _single_leg_network(api, currency: str, unit_price: str, percent: str):
    net = await new_network(api, f"{currency} network", currency=currency)
    provider = await net.onboard("Provider", "PROVIDER")
    service_id = await net.service("Rides", provider, [{"metric": "minutes", "model": "PER_UNIT", "unitPrice": unit_price}])
    assert (await net.agree(net.owner, provider, service_id, {"kind": "PERCENT", "percent": percent}))["errors"] == []
    return net, service_id


async def test_a_zero_decimal_currency_has_no_minor_digits(api):
    net, service_id = await _single_leg_network(api, "JPY", "15", "12.5")
    quote = await _quote(api, net.owner.key, service_id, [{"metric": "minutes", "quantity": "30"}])
    assert quote["total"] == {"amount": "450", "currency": "JPY"}
    assert quote["lines"][0]["amount"] == {"amount": "450", "currency": "JPY"}
    # 12.5 % of 450 is 56.25: 56 yen.
    assert _flows(quote) == {("JPY network owner", "Provider", "56")}
    assert _retained(quote) == {"JPY network owner": "394", "Provider": "56"}


async def test_a_three_decimal_currency_keeps_three_digits(api):
    net, service_id = await _single_leg_network(api, "BHD", "0.125", "10")
    quote = await _quote(api, net.owner.key, service_id, [{"metric": "minutes", "quantity": "7"}])
    assert quote["total"] == {"amount": "0.875", "currency": "BHD"}
    # 10 % of 0.875 is 0.0875: 0.088 half up.
    assert _flows(quote) == {("BHD network owner", "Provider", "0.088")}
    assert _retained(quote) == {"BHD network owner": "0.787", "Provider": "0.088"}


async def test_half_even_networks_round_ties_to_even(api):
    net = await new_network(api, "Even", roundingMode="HALF_EVEN")
    provider = await net.onboard("Provider", "PROVIDER")
    service_id = await net.service("Rides", provider, [{"metric": "minutes", "model": "PER_UNIT", "unitPrice": "0.29"}])
    assert (await net.agree(net.owner, provider, service_id, {"kind": "PERCENT", "percent": "85"}))["errors"] == []
    quote = await _quote(api, net.owner.key, service_id, [{"metric": "minutes", "quantity": "30"}])
    # 85 % of 8.70 is 7.395: 7.40 both ways; 50 minutes make 14.50, 85 % of it 12.325: 12.32 half even.
    assert _flows(quote) == {("Even owner", "Provider", "7.40")}
    quote = await _quote(api, net.owner.key, service_id, [{"metric": "minutes", "quantity": "50"}])
    assert _flows(quote) == {("Even owner", "Provider", "12.32")}


async def test_a_party_of_another_network_cannot_quote_the_service(api, mobility):
    other = await new_network(api, "Other")
    for key in (other.owner.key, (await other.onboard("Outsider")).key, (await mobility.net.onboard("Stranger")).key):
        body = await api.post(QUOTE, {"id": mobility.service_id, "usage": ONE_RENTAL}, key)
        assert body["data"] == {"quote": None}
        assert [(e["extensions"]["code"], e["extensions"]["field"]) for e in body["errors"]] == [("NOT_FOUND", ["serviceId"])]
        assert "9.70" not in str(body)


async def test_an_id_that_is_not_a_service_is_not_found(api, mobility):
    for bad in ("garbage", mobility.citycar.id, to_global_id("Service", 10**12)):
        body = await api.post(QUOTE, {"id": bad, "usage": ONE_RENTAL}, mobility.net.owner.key)
        assert body["data"] == {"quote": None}
        assert body["errors"][0]["extensions"]["code"] == "NOT_FOUND"

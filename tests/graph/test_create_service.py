"""createService: the owner puts a service with its price plan into the network."""

import pytest

from graph.ids import to_global_id
from tests.graph.conftest import CAR_SHARING_CHARGES, new_network

CREATE_SERVICE = """
mutation($input: CreateServiceInput!) {
  createService(input: $input) {
    service { id name currency provider { name } billedBy { name } }
    errors { field code message }
  }
}"""

SERVICE_CHARGES = """
query($id: ID!) {
  service(id: $id) {
    name
    charges {
      metric model unitPrice
      tiers { upTo unitPrice flatFee }
      packageSize packagePrice freeUnits ratePercent fixedFee minPerEvent maxPerEvent
    }
  }
}"""

SERVICES = "{ network { services { edges { node { id name } } } } }"

TIERED = [
    {"metric": "calls", "model": "GRADUATED", "tiers": [
        {"upTo": "1000", "unitPrice": "0.001", "flatFee": "5.00"},
        {"upTo": "10000", "unitPrice": "0.0008"},
        {"upTo": None, "unitPrice": "0.0005"},
    ]},
    {"metric": "storage", "model": "VOLUME", "tiers": [
        {"upTo": "100", "unitPrice": "0.10"},
        {"upTo": None, "unitPrice": "0.08", "flatFee": "1"},
    ]},
    {"metric": "exports", "model": "PACKAGE", "packageSize": "10", "packagePrice": "2.50", "freeUnits": "5"},
    {"metric": "payments", "model": "PERCENTAGE", "ratePercent": "1.4", "fixedFee": "0.25",
     "minPerEvent": "0.30", "maxPerEvent": "5.000000"},
    {"metric": "calls.premium", "model": "PER_UNIT", "unitPrice": "0.000001"},
]


def _input(provider_id: str, **overrides) -> dict:
    return {"input": {"name": "Car sharing", "providerId": provider_id, "charges": CAR_SHARING_CHARGES, **overrides}}


async def _services(api, network) -> list[dict]:
    return (await api.data(SERVICES, key=network.owner.key))["network"]["services"]["edges"]


async def test_the_owner_creates_a_service_billed_by_itself_by_default(api, network):
    citycar = await network.onboard("CityCar", "PROVIDER")
    payload = (await api.data(CREATE_SERVICE, _input(citycar.id), network.owner.key))["createService"]
    assert payload["errors"] == []
    assert {k: v for k, v in payload["service"].items() if k != "id"} == {
        "name": "Car sharing",
        "currency": "EUR",
        "provider": {"name": "CityCar"},
        "billedBy": {"name": "Test network owner"},
    }
    assert [edge["node"]["name"] for edge in await _services(api, network)] == ["Car sharing"]


async def test_charges_read_back_with_the_exact_decimals_they_were_given(api, network):
    provider = await network.onboard("CloudCo", "PROVIDER")
    payload = (
        await api.data(CREATE_SERVICE, _input(provider.id, name="API", charges=TIERED, currency="USD"), network.owner.key)
    )["createService"]
    assert payload["errors"] == []
    assert payload["service"]["currency"] == "USD"
    charges = (await api.data(SERVICE_CHARGES, {"id": payload["service"]["id"]}, network.owner.key))["service"]["charges"]
    empty = dict.fromkeys(
        ["unitPrice", "tiers", "packageSize", "packagePrice", "freeUnits", "ratePercent", "fixedFee", "minPerEvent", "maxPerEvent"]
    )
    assert charges == [
        {**empty, "metric": "calls", "model": "GRADUATED", "tiers": [
            {"upTo": "1000", "unitPrice": "0.001", "flatFee": "5.00"},
            {"upTo": "10000", "unitPrice": "0.0008", "flatFee": "0"},
            {"upTo": None, "unitPrice": "0.0005", "flatFee": "0"},
        ]},
        {**empty, "metric": "storage", "model": "VOLUME", "tiers": [
            {"upTo": "100", "unitPrice": "0.10", "flatFee": "0"},
            {"upTo": None, "unitPrice": "0.08", "flatFee": "1"},
        ]},
        {**empty, "metric": "exports", "model": "PACKAGE", "packageSize": "10", "packagePrice": "2.50", "freeUnits": "5"},
        {**empty, "metric": "payments", "model": "PERCENTAGE", "ratePercent": "1.4", "fixedFee": "0.25",
         "minPerEvent": "0.30", "maxPerEvent": "5.000000"},
        {**empty, "metric": "calls.premium", "model": "PER_UNIT", "unitPrice": "0.000001"},
    ]


async def test_a_reselling_partner_can_be_the_billing_party(api, network):
    """B2B2C: the partner is the merchant of record, and sees the service it bills."""
    citycar = await network.onboard("CityCar", "PROVIDER")
    reseller = await network.onboard("RideHub")
    payload = (await api.data(CREATE_SERVICE, _input(citycar.id, billedById=reseller.id), network.owner.key))["createService"]
    assert payload["errors"] == []
    assert payload["service"]["billedBy"] == {"name": "RideHub"}
    seen = (await api.data(SERVICE_CHARGES, {"id": payload["service"]["id"]}, reseller.key))["service"]
    assert seen["name"] == "Car sharing"
    assert [c["metric"] for c in seen["charges"]] == ["minutes", "rental"]


@pytest.mark.parametrize("kind", ["PARTNER", "PROVIDER"])
async def test_only_the_owner_may_create_services(api, network, kind):
    caller = await network.onboard("Someone", kind)
    provider = await network.onboard("CityCar", "PROVIDER")
    body = await api.post(CREATE_SERVICE, _input(provider.id), caller.key)
    assert body["data"] is None
    assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"]
    assert await _services(api, network) == []


BAD_INPUTS = [
    ("empty name", {"name": "  "}, ["input", "name"], "INVALID"),
    ("10000-character name", {"name": "x" * 10_000}, ["input", "name"], "INVALID"),
    ("four-letter currency", {"currency": "EUR1"}, ["input", "currency"], "INVALID_CURRENCY"),
    ("currency without minor unit", {"currency": "XAU"}, ["input", "currency"], "INVALID_CURRENCY"),
    (
        "tiers not ascending",
        {"charges": [{"metric": "calls", "model": "GRADUATED", "tiers": [
            {"upTo": "100", "unitPrice": "0.01"}, {"upTo": "50", "unitPrice": "0.005"}, {"upTo": None, "unitPrice": "0"},
        ]}]},
        ["input", "charges", "0", "tiers", "1", "upTo"],
        "INVALID_TIERS",
    ),
    (
        "last tier bounded",
        {"charges": CAR_SHARING_CHARGES + [{"metric": "calls", "model": "VOLUME", "tiers": [
            {"upTo": "100", "unitPrice": "0.01"}, {"upTo": "500", "unitPrice": "0.005"},
        ]}]},
        ["input", "charges", "2", "tiers", "1", "upTo"],
        "INVALID_TIERS",
    ),
    (
        "price with 7 decimals",
        {"charges": [{"metric": "minutes", "model": "PER_UNIT", "unitPrice": "0.2900001"}]},
        ["input", "charges", "0", "unitPrice"],
        "TOO_MANY_DECIMALS",
    ),
    (
        "percentage without rate",
        {"charges": [{"metric": "payments", "model": "PERCENTAGE", "fixedFee": "0.25"}]},
        ["input", "charges", "0", "ratePercent"],
        "INVALID",
    ),
    (
        "NaN price",
        {"charges": [{"metric": "minutes", "model": "PER_UNIT", "unitPrice": "NaN"}]},
        ["input", "charges", "0", "unitPrice"],
        "INVALID",
    ),
    (
        "same metric twice",
        {"charges": [CAR_SHARING_CHARGES[0], CAR_SHARING_CHARGES[0]]},
        ["input", "charges", "1", "metric"],
        "INVALID",
    ),
    ("no charges", {"charges": []}, ["input", "charges"], "INVALID"),
]


@pytest.mark.parametrize(("overrides", "field", "code"), [case[1:] for case in BAD_INPUTS], ids=[c[0] for c in BAD_INPUTS])
async def test_bad_input_is_refused_with_its_field_and_nothing_is_written(api, network, overrides, field, code):
    provider = await network.onboard("CityCar", "PROVIDER")
    payload = (await api.data(CREATE_SERVICE, _input(provider.id, **overrides), network.owner.key))["createService"]
    assert payload["service"] is None
    assert [(e["field"], e["code"]) for e in payload["errors"]] == [(field, code)]
    assert payload["errors"][0]["message"]
    assert await _services(api, network) == []


async def test_every_problem_of_a_plan_is_reported_at_once(api, network):
    provider = await network.onboard("CityCar", "PROVIDER")
    charges = [
        {"metric": "minutes", "model": "PER_UNIT", "unitPrice": "-0.29"},
        {"metric": "rental", "model": "FLAT"},
    ]
    payload = (
        await api.data(CREATE_SERVICE, _input(provider.id, name="", charges=charges, currency="XAU"), network.owner.key)
    )["createService"]
    assert sorted((e["field"], e["code"]) for e in payload["errors"]) == [
        (["input", "charges", "0", "unitPrice"], "INVALID"),
        (["input", "charges", "1", "unitPrice"], "INVALID"),
        (["input", "currency"], "INVALID_CURRENCY"),
        (["input", "name"], "INVALID"),
    ]


async def test_an_unknown_provider_is_not_found(api, network):
    provider = await network.onboard("CityCar", "PROVIDER")
    partner = await network.onboard("ParkSpace")
    cases = [
        ("bm90LWFuLWlk", ["input", "providerId"]),  # base64 of "not-an-id"
        ("garbage!", ["input", "providerId"]),
        (to_global_id("Party", 10**12), ["input", "providerId"]),
        (network.id, ["input", "providerId"]),
    ]
    for provider_id, field in cases:
        payload = (await api.data(CREATE_SERVICE, _input(provider_id), network.owner.key))["createService"]
        assert [(e["field"], e["code"]) for e in payload["errors"]] == [(field, "NOT_FOUND")], provider_id
    payload = (await api.data(CREATE_SERVICE, _input(provider.id, billedById=network.id), network.owner.key))[
        "createService"
    ]
    assert [(e["field"], e["code"]) for e in payload["errors"]] == [(["input", "billedById"], "NOT_FOUND")]
    # A partner is no provider: it exists, so the answer says what is wrong with it.
    payload = (await api.data(CREATE_SERVICE, _input(partner.id), network.owner.key))["createService"]
    assert [(e["field"], e["code"]) for e in payload["errors"]] == [(["input", "providerId"], "INVALID")]
    assert await _services(api, network) == []


async def test_a_provider_of_another_network_is_not_found(api, network):
    other = await new_network(api, "Other")
    foreign = await other.onboard("Foreign provider", "PROVIDER")
    payload = (await api.data(CREATE_SERVICE, _input(foreign.id), network.owner.key))["createService"]
    assert [(e["field"], e["code"]) for e in payload["errors"]] == [(["input", "providerId"], "NOT_FOUND")]
    assert await _services(api, network) == []


async def test_a_json_float_for_a_decimal_is_a_top_level_error(api, network):
    provider = await network.onboard("CityCar", "PROVIDER")
    charges = [{"metric": "minutes", "model": "PER_UNIT", "unitPrice": 0.29}]
    body = await api.post(CREATE_SERVICE, _input(provider.id, charges=charges), network.owner.key)
    assert body.get("data") is None
    assert len(body["errors"]) == 1
    assert "as strings" in body["errors"][0]["message"]
    assert await _services(api, network) == []

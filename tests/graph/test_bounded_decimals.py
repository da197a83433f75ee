"""Every decimal input is a short string in plain notation, bounded before any arithmetic: an
exponent ("1E+999999999" once took 15 s of CPU and 2 GB), a text above 32 characters, a
magnitude above 10^12 or a sign where none belongs is refused with INVALID at its own field,
and nothing is written. Quantities keep their 10^9 bound and its QUANTITY_OVERFLOW."""

import json

import pytest

from tests.graph.conftest import CAR_SHARING_CHARGES, ONBOARD
from tests.graph.test_add_agreement import _add, _chain, car_sharing  # noqa: F401 - the fixture
from tests.graph.test_create_service import CREATE_SERVICE, _input, _services
from tests.graph.test_quote import QUOTE
from tests.graph.test_record_usage import EVENTS, event, record, revenue
from tests.graph.test_usage_ndjson import lines, send

ATTACKS = {
    "exponent": "1E+999999999",
    "small-exponent": "1e2",
    "thirty-three-characters": "0" * 32 + "1",
    "above-ten-to-the-twelve": "1000000000000.01",
    "negative": "-1",
}
"Values refused as INVALID wherever a non-negative decimal is expected."

RULES = {
    "percent": {"kind": "PERCENT"},
    "amount": {"kind": "PER_UNIT", "metric": "minutes"},
    "weight": {"kind": "REMAINDER"},
    "min": {"kind": "PERCENT", "percent": "5"},
    "max": {"kind": "PERCENT", "percent": "5"},
}
"Each decimal field of a rule, in a rule that takes it."


@pytest.mark.parametrize("attack", ATTACKS.values(), ids=ATTACKS.keys())
@pytest.mark.parametrize("field", RULES)
async def test_a_rule_decimal_out_of_bounds_is_invalid_at_its_field_and_no_agreement_is_made(api, car_sharing, field, attack):
    net, service_id = car_sharing
    rule = {**RULES[field], field: attack}
    payload = await _add(api, net.owner.key, payeeId=net.members["ParkSpace"].id, serviceId=service_id, rule=rule)
    assert payload["agreement"] is None
    assert [(e["field"], e["code"]) for e in payload["errors"]] == [(["input", "rule", field], "INVALID")]
    assert await _chain(api, net, service_id) == []


async def test_a_rule_amount_of_ten_to_the_twelve_is_accepted(api, car_sharing):
    net, service_id = car_sharing
    rule = {"kind": "PER_UNIT", "metric": "minutes", "amount": "1000000000000", "max": "1000000000000.00"}
    payload = await _add(api, net.owner.key, payeeId=net.members["ParkSpace"].id, serviceId=service_id, rule=rule)
    assert payload["errors"] == []
    assert (payload["agreement"]["rule"]["amount"], payload["agreement"]["rule"]["max"]) == ("1000000000000", "1000000000000.00")


async def test_an_onboarded_partners_agreement_is_checked_through_the_same_door(api, car_sharing):
    net, service_id = car_sharing
    agreements = [{"serviceId": service_id, "rule": {"kind": "PER_UNIT", "metric": "minutes", "amount": "1E+100000000"}}]
    payload = (await api.data(ONBOARD, {"input": {"name": "Attacker", "kind": "PARTNER", "agreements": agreements}}, net.owner.key))["onboardPartner"]
    assert payload["party"] is None
    assert [(e["field"], e["code"]) for e in payload["errors"]] == [(["input", "agreements", "0", "rule", "amount"], "INVALID")]
    assert await _chain(api, net, service_id) == []


CHARGES = {
    ("unitPrice",): {"metric": "minutes", "model": "PER_UNIT"},
    ("packageSize",): {"metric": "minutes", "model": "PACKAGE", "packagePrice": "1"},
    ("packagePrice",): {"metric": "minutes", "model": "PACKAGE", "packageSize": "10"},
    ("freeUnits",): {"metric": "minutes", "model": "PACKAGE", "packageSize": "10", "packagePrice": "1"},
    ("ratePercent",): {"metric": "minutes", "model": "PERCENTAGE"},
    ("fixedFee",): {"metric": "minutes", "model": "PERCENTAGE", "ratePercent": "1"},
    ("minPerEvent",): {"metric": "minutes", "model": "PERCENTAGE", "ratePercent": "1"},
    ("maxPerEvent",): {"metric": "minutes", "model": "PERCENTAGE", "ratePercent": "1"},
    ("tiers", "0", "upTo"): {"metric": "minutes", "model": "GRADUATED"},
    ("tiers", "0", "unitPrice"): {"metric": "minutes", "model": "GRADUATED"},
    ("tiers", "0", "flatFee"): {"metric": "minutes", "model": "GRADUATED"},
}
"Each decimal field of a charge (a path below the charge), in a charge that takes it."


def _charge(path: tuple[str, ...], value: str) -> dict:
    charge = dict(CHARGES[path])
    if path[0] == "tiers":
        tier = {"upTo": "10", "unitPrice": "0.29", "flatFee": "0", path[2]: value}
        charge["tiers"] = [tier, {"upTo": None, "unitPrice": "0.20"}]
    else:
        charge[path[0]] = value
    return charge


@pytest.mark.parametrize("attack", ["1E+999999999", "0" * 32 + "1", "1000000000000.000001"], ids=["exponent", "too-long", "too-large"])
@pytest.mark.parametrize("path", CHARGES, ids=["/".join(p) for p in CHARGES])
async def test_a_charge_decimal_out_of_bounds_is_invalid_at_its_field_and_no_service_is_made(api, network, path, attack):
    provider = await network.onboard("CityCar", "PROVIDER")
    payload = (await api.data(CREATE_SERVICE, _input(provider.id, charges=[_charge(path, attack)]), network.owner.key))["createService"]
    assert payload["service"] is None
    assert [(e["field"], e["code"]) for e in payload["errors"]] == [(["input", "charges", "0", *path], "INVALID")]
    assert await _services(api, network) == []


@pytest.mark.parametrize("path", [p for p in CHARGES if p[0] != "tiers"], ids=[p[0] for p in CHARGES if p[0] != "tiers"])
async def test_a_negative_charge_decimal_is_invalid_at_its_field(api, network, path):
    provider = await network.onboard("CityCar", "PROVIDER")
    payload = (await api.data(CREATE_SERVICE, _input(provider.id, charges=[_charge(path, "-1")]), network.owner.key))["createService"]
    assert [(e["field"], e["code"]) for e in payload["errors"]] == [(["input", "charges", "0", *path], "INVALID")]
    assert await _services(api, network) == []


CHANGE_PRICE_PLAN = """
mutation($input: ChangePricePlanInput!) { changePricePlan(input: $input) { errors { field code } } }"""
PLAN = """query($id: ID!) { service(id: $id) { charges { metric unitPrice } } }"""


async def test_a_new_plan_with_an_exponent_is_invalid_and_the_old_plan_stays(api, car_sharing):
    net, service_id = car_sharing
    charges = [{"metric": "minutes", "model": "PER_UNIT", "unitPrice": "1E+100000000"}, CAR_SHARING_CHARGES[1]]
    payload = (await api.data(CHANGE_PRICE_PLAN, {"input": {"serviceId": service_id, "charges": charges}}, net.owner.key))["changePricePlan"]
    assert payload["errors"] == [{"field": ["input", "charges", "0", "unitPrice"], "code": "INVALID"}]
    plan = (await api.data(PLAN, {"id": service_id}, net.owner.key))["service"]["charges"]
    assert plan == [{"metric": "minutes", "unitPrice": "0.29"}, {"metric": "rental", "unitPrice": "1.00"}]


QUANTITIES = [
    ("exponent", "1E+999999999", "INVALID"),
    ("small-exponent", "3E+1", "INVALID"),
    ("thirty-three-characters", "0" * 32 + "1", "INVALID"),
    ("plus-sign", "+1", "INVALID"),
    ("above-ten-to-the-twelve", "10000000000000", "QUANTITY_OVERFLOW"),
]


@pytest.mark.parametrize(("quantity", "code"), [q[1:] for q in QUANTITIES], ids=[q[0] for q in QUANTITIES])
async def test_a_quantity_out_of_bounds_rejects_its_event_alone(api, mobility, quantity, code):
    sid = mobility.service_id
    payload = await record(api, mobility.citycar.key, [event(sid, "good"), event(sid, "bad", quantity=quantity)])
    assert [r["status"] for r in payload["results"]] == ["ACCEPTED", "REJECTED"]
    assert payload["results"][1]["errors"] == [{"field": ["events", "1", "quantity"], "code": code}]
    keys = [e["node"]["idempotencyKey"] for e in (await api.data(EVENTS, key=mobility.net.owner.key))["usageEvents"]["edges"]]
    assert keys == ["good"]
    assert await revenue(api, mobility) == "8.70"


@pytest.mark.parametrize("quantity", ['"1E+999999999"', "1e999999999", "1.0000000000000000000000000000001"],
                         ids=["exponent-text", "exponent-number", "long-number"])
async def test_an_ndjson_quantity_goes_through_the_same_door(client, api, mobility, quantity):
    sid = mobility.service_id
    good = json.dumps(event(sid, "good"))
    bad = json.dumps(event(sid, "bad")).replace('"quantity": "30"', f'"quantity": {quantity}')
    results, summary = lines(await send(client, mobility.citycar.key, (good + "\n" + bad + "\n").encode()))
    assert summary == {"accepted": 1, "duplicates": 0, "rejected": 1}
    assert [(e["field"], e["code"]) for e in results[1]["errors"]] == [(["events", "1", "quantity"], "INVALID")]
    assert await revenue(api, mobility) == "8.70"


async def test_a_quote_quantity_with_an_exponent_is_invalid_at_its_path(api, mobility):
    usage = [{"metric": "minutes", "quantity": "30"}, {"metric": "rental", "quantity": "1E+999999999"}]
    body = await api.post(QUOTE, {"id": mobility.service_id, "usage": usage}, mobility.net.owner.key)
    assert body["data"] == {"quote": None}
    assert [(e["extensions"]["code"], e["extensions"]["field"]) for e in body["errors"]] == [("INVALID", ["usage", "1", "quantity"])]

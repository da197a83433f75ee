"""addAgreement: out of the payer's income from a service, the payee receives the rule."""

from datetime import UTC, datetime

import pytest

from graph.ids import split_global_id, to_global_id
from models import ClosedPeriod
from tests.graph.conftest import CAR_SHARING_CHARGES, new_network

ADD_AGREEMENT = """
mutation($input: AgreementInput!) {
  addAgreement(input: $input) {
    agreement {
      payer { name } payee { name } service { name } effectiveFrom effectiveTo
      rule { kind percent amount metric base weight priority min max }
    }
    errors { field code message }
  }
}"""

CHAIN = """
query($id: ID!, $period: String) {
  valueChain(serviceId: $id, period: $period) { agreements { payer { name } payee { name } } }
}"""

NOW = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)


async def _chain(api, net, service_id: str, period: str | None = None) -> list[tuple[str, str]]:
    chain = (await api.data(CHAIN, {"id": service_id, "period": period}, net.owner.key))["valueChain"]
    return [(a["payer"]["name"], a["payee"]["name"]) for a in chain["agreements"]]


async def _add(api, key: str, **agreement) -> dict:
    return (await api.data(ADD_AGREEMENT, {"input": agreement}, key))["addAgreement"]


@pytest.fixture
async def car_sharing(api, rt):
    """On 2026-11-15, a network whose first period is 2026-10: CityCar's car sharing, three partners."""
    rt.clock = lambda: NOW
    net = await new_network(api, "Mobility", firstPeriod="2026-10")
    citycar = await net.onboard("CityCar", "PROVIDER")
    for name in ("FleetCare", "ParkSpace", "HelpDesk24"):
        await net.onboard(name)
    service_id = await net.service("Car sharing", citycar, CAR_SHARING_CHARGES)
    return net, service_id


async def test_the_owner_creates_an_agreement_paid_by_itself_by_default(api, car_sharing):
    net, service_id = car_sharing
    payload = await _add(
        api, net.owner.key, payeeId=net.members["CityCar"].id, serviceId=service_id, rule={"kind": "PERCENT", "percent": "85"}
    )
    assert payload == {
        "agreement": {
            "payer": {"name": "Mobility owner"},
            "payee": {"name": "CityCar"},
            "service": {"name": "Car sharing"},
            "effectiveFrom": "2026-11",
            "effectiveTo": None,
            "rule": {"kind": "PERCENT", "percent": "85", "amount": None, "metric": None, "base": "GROSS",
                     "weight": None, "priority": 100, "min": None, "max": None},
        },
        "errors": [],
    }
    assert await _chain(api, net, service_id) == [("Mobility owner", "CityCar")]


async def test_the_owner_may_make_any_party_pay(api, car_sharing):
    net, service_id = car_sharing
    citycar, fleetcare = net.members["CityCar"], net.members["FleetCare"]
    payload = await _add(
        api,
        net.owner.key,
        payerId=citycar.id,
        payeeId=fleetcare.id,
        serviceId=service_id,
        rule={"kind": "PER_EVENT", "amount": "0.50", "metric": "rental", "min": "10.00", "max": "500", "priority": 5},
        effectiveFrom="2026-10",
    )
    assert payload["errors"] == []
    assert payload["agreement"]["effectiveFrom"] == "2026-10"
    assert payload["agreement"]["rule"] == {
        "kind": "PER_EVENT", "percent": None, "amount": "0.50", "metric": "rental", "base": None,
        "weight": None, "priority": 5, "min": "10.00", "max": "500",
    }
    assert await _chain(api, net, service_id, "2026-10") == [("CityCar", "FleetCare")]


async def test_a_partner_pays_out_of_its_own_income(api, car_sharing):
    net, service_id = car_sharing
    helpdesk, parkspace = net.members["HelpDesk24"], net.members["ParkSpace"]
    assert (await net.agree(net.owner, helpdesk, service_id, {"kind": "PERCENT", "percent": "2"}))["errors"] == []
    # ParkSpace joins the chain, so HelpDesk24 can see it and name it as its payee
    assert (await net.agree(net.owner, parkspace, service_id, {"kind": "PERCENT", "percent": "1"}))["errors"] == []
    payload = await _add(
        api,
        helpdesk.key,
        payeeId=parkspace.id,
        serviceId=service_id,
        rule={"kind": "PERCENT", "percent": "40", "base": "REMAINING"},
    )
    assert payload["errors"] == []
    assert payload["agreement"]["payer"] == {"name": "HelpDesk24"}
    assert payload["agreement"]["rule"]["base"] == "REMAINING"
    assert await _chain(api, net, service_id) == [
        ("Mobility owner", "HelpDesk24"), ("Mobility owner", "ParkSpace"), ("HelpDesk24", "ParkSpace")
    ]


PARTY = "query($id: ID!) { party(id: $id) { name } }"


async def test_a_partner_naming_a_party_it_cannot_see_as_payee_gets_the_answer_of_an_unknown_id(api, car_sharing):
    """ParkSpace exists but is in no chain of HelpDesk24's: naming it answers exactly as a forged
    id does, nothing is written, and HelpDesk24 still cannot see it."""
    net, service_id = car_sharing
    helpdesk, parkspace = net.members["HelpDesk24"], net.members["ParkSpace"]
    assert (await net.agree(net.owner, helpdesk, service_id, {"kind": "PERCENT", "percent": "2"}))["errors"] == []
    rule = {"kind": "PERCENT", "percent": "40"}
    hidden = await _add(api, helpdesk.key, payeeId=parkspace.id, serviceId=service_id, rule=rule)
    forged = await _add(api, helpdesk.key, payeeId=to_global_id("Party", 10**12), serviceId=service_id, rule=rule)
    assert hidden == forged == {
        "agreement": None, "errors": [{"field": ["input", "payeeId"], "code": "NOT_FOUND", "message": "payee not found"}]
    }
    assert await _chain(api, net, service_id) == [("Mobility owner", "HelpDesk24")]
    assert (await api.data(PARTY, {"id": parkspace.id}, helpdesk.key))["party"] is None
    assert (await api.data(PARTY, {"id": helpdesk.id}, parkspace.key))["party"] is None


async def test_a_partner_cannot_make_another_party_pay(api, car_sharing):
    net, service_id = car_sharing
    helpdesk, parkspace = net.members["HelpDesk24"], net.members["ParkSpace"]
    assert (await net.agree(net.owner, helpdesk, service_id, {"kind": "PERCENT", "percent": "2"}))["errors"] == []
    for payer in (net.owner, net.members["CityCar"]):
        payload = await _add(
            api, helpdesk.key, payerId=payer.id, payeeId=parkspace.id, serviceId=service_id,
            rule={"kind": "PERCENT", "percent": "10"},
        )
        assert payload["agreement"] is None
        assert [(e["field"], e["code"]) for e in payload["errors"]] == [(["input", "payerId"], "FORBIDDEN_PAYER")]
    assert await _chain(api, net, service_id) == [("Mobility owner", "HelpDesk24")]


async def test_a_partner_outside_the_chain_does_not_find_the_service(api, car_sharing):
    net, service_id = car_sharing
    payload = await _add(
        api, net.members["ParkSpace"].key, payeeId=net.members["FleetCare"].id, serviceId=service_id,
        rule={"kind": "PERCENT", "percent": "10"},
    )
    assert [(e["field"], e["code"]) for e in payload["errors"]] == [(["input", "serviceId"], "NOT_FOUND")]
    assert await _chain(api, net, service_id) == []


async def test_an_agreement_that_closes_a_cycle_is_refused(api, car_sharing):
    net, service_id = car_sharing
    fleetcare, parkspace = net.members["FleetCare"], net.members["ParkSpace"]
    percent = {"kind": "PERCENT", "percent": "10"}
    assert (await net.agree(net.owner, fleetcare, service_id, percent))["errors"] == []
    assert (await net.agree(net.owner, parkspace, service_id, percent))["errors"] == []
    assert (await net.agree(fleetcare, parkspace, service_id, percent))["errors"] == []
    payload = await net.agree(parkspace, fleetcare, service_id, percent)
    assert payload["agreement"] is None
    assert [(e["field"], e["code"]) for e in payload["errors"]] == [(["input", "payeeId"], "AGREEMENT_CYCLE")]
    assert "FleetCare already pays ParkSpace" in payload["errors"][0]["message"]


async def test_a_longer_cycle_is_refused_too(api, car_sharing):
    net, service_id = car_sharing
    citycar, fleetcare, helpdesk = net.members["CityCar"], net.members["FleetCare"], net.members["HelpDesk24"]
    percent = {"kind": "PERCENT", "percent": "10"}
    assert (await net.agree(net.owner, citycar, service_id, percent))["errors"] == []
    # the owner draws the chain through parties the payers cannot see yet
    assert (await net.agree(citycar, fleetcare, service_id, percent, by=net.owner))["errors"] == []
    assert (await net.agree(fleetcare, helpdesk, service_id, percent, by=net.owner))["errors"] == []
    before = await _chain(api, net, service_id)
    payload = await net.agree(helpdesk, citycar, service_id, percent)
    assert [(e["field"], e["code"]) for e in payload["errors"]] == [(["input", "payeeId"], "AGREEMENT_CYCLE")]
    # Paying oneself is the shortest cycle of all.
    payload = await _add(api, net.owner.key, payerId=citycar.id, payeeId=citycar.id, serviceId=service_id, rule=percent)
    assert [(e["field"], e["code"]) for e in payload["errors"]] == [(["input", "payeeId"], "AGREEMENT_CYCLE")]
    assert await _chain(api, net, service_id) == before


async def test_the_reverse_of_an_ended_agreement_is_no_cycle(api, car_sharing):
    net, service_id = car_sharing
    fleetcare, parkspace = net.members["FleetCare"], net.members["ParkSpace"]
    percent = {"kind": "PERCENT", "percent": "10"}
    payload = await _add(
        api, net.owner.key, payerId=fleetcare.id, payeeId=parkspace.id, serviceId=service_id, rule=percent,
        effectiveFrom="2026-10",
    )
    assert payload["errors"] == []
    end = """mutation($input: EndAgreementInput!) { endAgreement(input: $input) { errors { code } } }"""
    chain_ids = (
        await api.data("query($id: ID!) { valueChain(serviceId: $id) { agreements { id } } }", {"id": service_id}, net.owner.key)
    )["valueChain"]["agreements"]
    ended = await api.data(end, {"input": {"agreementId": chain_ids[0]["id"], "effectiveTo": "2026-12"}}, net.owner.key)
    assert ended["endAgreement"]["errors"] == []
    payload = await _add(
        api, net.owner.key, payerId=parkspace.id, payeeId=fleetcare.id, serviceId=service_id, rule=percent,
        effectiveFrom="2026-12",
    )
    assert payload["errors"] == []
    assert await _chain(api, net, service_id, "2026-11") == [("FleetCare", "ParkSpace")]
    assert await _chain(api, net, service_id, "2026-12") == [("ParkSpace", "FleetCare")]


BAD_RULES = [
    ("percent above 100", {"kind": "PERCENT", "percent": "101"}, ["input", "rule", "percent"], "INVALID"),
    ("negative percent", {"kind": "PERCENT", "percent": "-1"}, ["input", "rule", "percent"], "INVALID"),
    ("percent with 7 decimals", {"kind": "PERCENT", "percent": "2.0000001"}, ["input", "rule", "percent"], "TOO_MANY_DECIMALS"),
    ("NaN percent", {"kind": "PERCENT", "percent": "NaN"}, ["input", "rule", "percent"], "INVALID"),
    ("percent without percent", {"kind": "PERCENT"}, ["input", "rule", "percent"], "INVALID"),
    ("per unit without metric", {"kind": "PER_UNIT", "amount": "0.02"}, ["input", "rule", "metric"], "INVALID"),
    (
        "metric the service does not charge",
        {"kind": "PER_UNIT", "amount": "0.02", "metric": "km"},
        ["input", "rule", "metric"],
        "UNKNOWN_METRIC",
    ),
    ("remainder of weight 0", {"kind": "REMAINDER", "weight": "0"}, ["input", "rule", "weight"], "INVALID"),
    (
        "remainder with a cap",
        {"kind": "REMAINDER", "weight": "1", "max": "5.00"},
        ["input", "rule", "max"],
        "INVALID",
    ),
    (
        "min above max",
        {"kind": "PERCENT", "percent": "5", "min": "10.00", "max": "5.00"},
        ["input", "rule", "min"],
        "INVALID",
    ),
    ("min below a cent", {"kind": "PERCENT", "percent": "5", "min": "0.001"}, ["input", "rule", "min"], "TOO_MANY_DECIMALS"),
    ("base on a per-event rule", {"kind": "PER_EVENT", "amount": "1", "metric": "rental", "base": "REMAINING"},
     ["input", "rule", "base"], "INVALID"),
    ("negative priority", {"kind": "PERCENT", "percent": "5", "priority": -1}, ["input", "rule", "priority"], "INVALID"),
]


@pytest.mark.parametrize(("rule", "field", "code"), [c[1:] for c in BAD_RULES], ids=[c[0] for c in BAD_RULES])
async def test_a_bad_rule_is_refused_at_its_field_and_nothing_is_written(api, car_sharing, rule, field, code):
    net, service_id = car_sharing
    payload = await _add(api, net.owner.key, payeeId=net.members["ParkSpace"].id, serviceId=service_id, rule=rule)
    assert payload["agreement"] is None
    assert [(e["field"], e["code"]) for e in payload["errors"]] == [(field, code)]
    assert await _chain(api, net, service_id) == []


async def test_every_problem_of_a_rule_is_reported_at_once(api, car_sharing):
    net, service_id = car_sharing
    rule = {"kind": "PER_UNIT", "amount": "-0.02", "metric": "km", "min": "1.005"}
    payload = await _add(api, net.owner.key, payeeId=net.members["ParkSpace"].id, serviceId=service_id, rule=rule)
    assert sorted((e["field"], e["code"]) for e in payload["errors"]) == [
        (["input", "rule", "amount"], "INVALID"),
        (["input", "rule", "metric"], "UNKNOWN_METRIC"),
        (["input", "rule", "min"], "TOO_MANY_DECIMALS"),
    ]


async def test_an_unknown_service_is_not_found(api, car_sharing):
    net, service_id = car_sharing
    other = await new_network(api, "Other")
    foreign_provider = await other.onboard("Foreign", "PROVIDER")
    foreign_service = await other.service("Foreign rides", foreign_provider, CAR_SHARING_CHARGES)
    for unknown in ("garbage", to_global_id("Service", 10**12), net.members["CityCar"].id, foreign_service):
        payload = await _add(
            api, net.owner.key, payeeId=net.members["ParkSpace"].id, serviceId=unknown, rule={"kind": "PERCENT", "percent": "1"}
        )
        assert [(e["field"], e["code"]) for e in payload["errors"]] == [(["input", "serviceId"], "NOT_FOUND")], unknown
    assert await _chain(api, net, service_id) == []


@pytest.mark.parametrize(
    "payee",
    ["owner", "other network", "unknown", "bad id"],
)
async def test_a_payee_that_cannot_be_paid_is_not_found(api, car_sharing, payee):
    net, service_id = car_sharing
    if payee == "owner":
        payee_id = net.owner.id
    elif payee == "other network":
        payee_id = (await (await new_network(api, "Other")).onboard("Foreign")).id
    elif payee == "unknown":
        payee_id = to_global_id("Party", 10**12)
    else:
        payee_id = to_global_id("Service", 1)
    payload = await _add(
        api, net.members["CityCar"].key, payeeId=payee_id, serviceId=service_id, rule={"kind": "PERCENT", "percent": "1"}
    )
    assert [(e["field"], e["code"]) for e in payload["errors"]] == [(["input", "payeeId"], "NOT_FOUND")]
    assert await _chain(api, net, service_id) == []


async def test_an_agreement_needs_a_payee(api, car_sharing):
    net, service_id = car_sharing
    payload = await _add(api, net.owner.key, serviceId=service_id, rule={"kind": "PERCENT", "percent": "1"})
    assert [(e["field"], e["code"]) for e in payload["errors"]] == [(["input", "payeeId"], "INVALID")]


@pytest.mark.parametrize(
    ("effective_from", "code"),
    [("2026-09", "BEFORE_FIRST_PERIOD"), ("2026-10", "PERIOD_CLOSED"), ("26-11", "INVALID_PERIOD")],
)
async def test_an_agreement_may_not_start_in_a_closed_or_unknown_period(api, rt, car_sharing, effective_from, code):
    net, service_id = car_sharing
    async with rt.sessions.begin() as session:
        session.add(ClosedPeriod(network_id=int(split_global_id(net.id)[1]), key="2026-10", closed_at=NOW))
    payload = await _add(
        api, net.owner.key, payeeId=net.members["ParkSpace"].id, serviceId=service_id,
        rule={"kind": "PERCENT", "percent": "1"}, effectiveFrom=effective_from,
    )
    assert [(e["field"], e["code"]) for e in payload["errors"]] == [(["input", "effectiveFrom"], code)]
    assert await _chain(api, net, service_id, "2026-10") == []
    assert await _chain(api, net, service_id) == []


async def test_a_rule_metric_is_checked_against_the_plan_of_its_first_period(api, car_sharing):
    net, service_id = car_sharing
    change = """mutation($input: ChangePricePlanInput!) { changePricePlan(input: $input) { errors { code } } }"""
    km_plan = [{"metric": "km", "model": "PER_UNIT", "unitPrice": "0.40"}]
    result = await api.data(change, {"input": {"serviceId": service_id, "charges": km_plan, "effectiveFrom": "2027-01"}}, net.owner.key)
    assert result["changePricePlan"]["errors"] == []
    per_km = {"kind": "PER_UNIT", "amount": "0.05", "metric": "km"}
    parkspace = net.members["ParkSpace"].id
    payload = await _add(api, net.owner.key, payeeId=parkspace, serviceId=service_id, rule=per_km)
    assert [(e["field"], e["code"]) for e in payload["errors"]] == [(["input", "rule", "metric"], "UNKNOWN_METRIC")]
    payload = await _add(api, net.owner.key, payeeId=parkspace, serviceId=service_id, rule=per_km, effectiveFrom="2027-01")
    assert payload["errors"] == []

"""changePricePlan: a new plan from a period boundary on; every period keeps the plan it was priced with."""

from datetime import UTC, datetime

import pytest

from graph.ids import split_global_id
from models import ClosedPeriod
from tests.graph.conftest import CAR_SHARING_CHARGES, new_network

CHANGE_PRICE_PLAN = """
mutation($input: ChangePricePlanInput!) {
  changePricePlan(input: $input) {
    service { id name }
    errors { field code message }
  }
}"""

CHARGES = """
query($id: ID!, $period: String) {
  service(id: $id) { charges(period: $period) { metric model unitPrice } }
}"""

NOW = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)
OLD_PLAN = [
    {"metric": "minutes", "model": "PER_UNIT", "unitPrice": "0.29"},
    {"metric": "rental", "model": "FLAT", "unitPrice": "1.00"},
]
NEW_PLAN = [{"metric": "minutes", "model": "PER_UNIT", "unitPrice": "0.31"}]


@pytest.fixture
async def car_sharing(api, rt):
    """A network created on 2026-11-15 with first period 2026-09, and a car-sharing service."""
    rt.clock = lambda: NOW
    net = await new_network(api, "Mobility", firstPeriod="2026-09")
    citycar = await net.onboard("CityCar", "PROVIDER")
    service_id = await net.service("Car sharing", citycar, CAR_SHARING_CHARGES)
    return net, service_id


async def _charges(api, key: str, service_id: str, period: str | None = None) -> list[dict]:
    return (await api.data(CHARGES, {"id": service_id, "period": period}, key))["service"]["charges"]


async def _change(api, key: str, service_id: str, charges=NEW_PLAN, **extra) -> dict:
    variables = {"input": {"serviceId": service_id, "charges": charges, **extra}}
    return (await api.data(CHANGE_PRICE_PLAN, variables, key))["changePricePlan"]


async def _plans(api, key: str, service_id: str) -> dict[str, list[dict]]:
    return {period: await _charges(api, key, service_id, period) for period in ("2026-09", "2026-11", "2026-12", "2027-06")}


async def test_a_plan_from_the_next_period_leaves_the_current_one_alone(api, car_sharing):
    net, service_id = car_sharing
    payload = await _change(api, net.owner.key, service_id, effectiveFrom="2026-12")
    assert payload["errors"] == []
    assert payload["service"]["id"] == service_id
    assert await _charges(api, net.owner.key, service_id) == OLD_PLAN
    assert await _charges(api, net.owner.key, service_id, "2026-11") == OLD_PLAN
    assert await _charges(api, net.owner.key, service_id, "2026-12") == NEW_PLAN
    assert await _charges(api, net.owner.key, service_id, "2027-06") == NEW_PLAN


async def test_a_change_in_the_current_period_replaces_its_plan_but_not_earlier_ones(api, car_sharing):
    net, service_id = car_sharing
    payload = await _change(api, net.owner.key, service_id)
    assert payload["errors"] == []
    assert await _charges(api, net.owner.key, service_id) == NEW_PLAN
    assert await _charges(api, net.owner.key, service_id, "2026-10") == OLD_PLAN
    assert await _charges(api, net.owner.key, service_id, "2026-09") == OLD_PLAN


async def test_a_later_change_supersedes_a_plan_that_had_not_started(api, car_sharing):
    net, service_id = car_sharing
    third = [{"metric": "minutes", "model": "PER_UNIT", "unitPrice": "0.35"}]
    assert (await _change(api, net.owner.key, service_id, effectiveFrom="2027-01"))["errors"] == []
    assert (await _change(api, net.owner.key, service_id, third, effectiveFrom="2026-12"))["errors"] == []
    assert await _plans(api, net.owner.key, service_id) == {
        "2026-09": OLD_PLAN,
        "2026-11": OLD_PLAN,
        "2026-12": third,
        "2027-06": third,
    }


async def test_the_same_change_twice_gives_the_same_plans(api, car_sharing):
    net, service_id = car_sharing
    assert (await _change(api, net.owner.key, service_id, effectiveFrom="2026-12"))["errors"] == []
    first = await _plans(api, net.owner.key, service_id)
    assert (await _change(api, net.owner.key, service_id, effectiveFrom="2026-12"))["errors"] == []
    assert await _plans(api, net.owner.key, service_id) == first


async def test_the_reselling_billing_party_may_change_its_plan(api, rt):
    rt.clock = lambda: NOW
    net = await new_network(api, "Resale")
    citycar = await net.onboard("CityCar", "PROVIDER")
    reseller = await net.onboard("RideHub")
    service_id = await net.service("Car sharing", citycar, CAR_SHARING_CHARGES, billed_by=reseller)
    assert (await _change(api, reseller.key, service_id, effectiveFrom="2026-12"))["errors"] == []
    assert await _charges(api, net.owner.key, service_id, "2026-12") == NEW_PLAN


@pytest.mark.parametrize("who", ["provider", "partner in the chain"])
async def test_a_party_that_does_not_bill_the_service_is_forbidden(api, car_sharing, who):
    net, service_id = car_sharing
    if who == "provider":
        caller = net.members["CityCar"]
    else:
        caller = await net.onboard("HelpDesk24")
        assert (await net.agree(net.owner, caller, service_id, {"kind": "PERCENT", "percent": "2"}))["errors"] == []
    body = await api.post(
        CHANGE_PRICE_PLAN, {"input": {"serviceId": service_id, "charges": NEW_PLAN}}, caller.key
    )
    assert body["data"] is None
    assert [e["extensions"]["code"] for e in body["errors"]] == ["FORBIDDEN"]
    assert await _charges(api, net.owner.key, service_id) == OLD_PLAN


async def test_a_partner_outside_the_chain_does_not_find_the_service(api, car_sharing):
    net, service_id = car_sharing
    stranger = await net.onboard("Stranger")
    payload = await _change(api, stranger.key, service_id)
    assert [(e["field"], e["code"]) for e in payload["errors"]] == [(["input", "serviceId"], "NOT_FOUND")]
    assert await _charges(api, net.owner.key, service_id) == OLD_PLAN


async def test_another_networks_service_is_not_found(api, car_sharing):
    _, service_id = car_sharing
    other = await new_network(api, "Other")
    payload = await _change(api, other.owner.key, service_id)
    assert [(e["field"], e["code"]) for e in payload["errors"]] == [(["input", "serviceId"], "NOT_FOUND")]


INVALID_PLANS = [
    ("empty plan", [], [(["input", "charges"], "INVALID")]),
    (
        "tiers and decimals",
        [
            {"metric": "minutes", "model": "GRADUATED", "tiers": [
                {"upTo": "60", "unitPrice": "0.29"}, {"upTo": "30", "unitPrice": "0.25"}, {"upTo": None, "unitPrice": "0.2"},
            ]},
            {"metric": "rental", "model": "FLAT", "unitPrice": "1.0000001"},
        ],
        [(["input", "charges", "0", "tiers", "1", "upTo"], "INVALID_TIERS"), (["input", "charges", "1", "unitPrice"], "TOO_MANY_DECIMALS")],
    ),
    (
        "bad metric and missing price",
        [{"metric": "mi nutes", "model": "PER_UNIT", "unitPrice": "0.29"}, {"metric": "rental", "model": "PACKAGE", "packageSize": "0"}],
        [
            (["input", "charges", "0", "metric"], "INVALID"),
            (["input", "charges", "1", "packagePrice"], "INVALID"),
            (["input", "charges", "1", "packageSize"], "INVALID"),
        ],
    ),
]


@pytest.mark.parametrize(("charges", "errors"), [c[1:] for c in INVALID_PLANS], ids=[c[0] for c in INVALID_PLANS])
async def test_an_invalid_plan_is_refused_with_paths_and_nothing_changes(api, car_sharing, charges, errors):
    net, service_id = car_sharing
    payload = await _change(api, net.owner.key, service_id, charges, effectiveFrom="2026-12")
    assert payload["service"] is None
    assert sorted((e["field"], e["code"]) for e in payload["errors"]) == sorted(errors)
    assert await _charges(api, net.owner.key, service_id, "2026-12") == OLD_PLAN


@pytest.mark.parametrize(
    ("period", "code"),
    [("2026-08", "BEFORE_FIRST_PERIOD"), ("1999-01", "BEFORE_FIRST_PERIOD"), ("2026-13", "INVALID_PERIOD"), ("next", "INVALID_PERIOD")],
)
async def test_an_effective_from_outside_the_networks_periods_is_refused(api, car_sharing, period, code):
    net, service_id = car_sharing
    payload = await _change(api, net.owner.key, service_id, effectiveFrom=period)
    assert [(e["field"], e["code"]) for e in payload["errors"]] == [(["input", "effectiveFrom"], code)]
    assert await _plans(api, net.owner.key, service_id) == dict.fromkeys(["2026-09", "2026-11", "2026-12", "2027-06"], OLD_PLAN)


async def test_a_closed_period_keeps_its_plan(api, rt, car_sharing):
    net, service_id = car_sharing
    network_id = int(split_global_id(net.id)[1])
    async with rt.sessions.begin() as session:
        session.add(ClosedPeriod(network_id=network_id, key="2026-09", closed_at=NOW))
    payload = await _change(api, net.owner.key, service_id, effectiveFrom="2026-09")
    assert [(e["field"], e["code"]) for e in payload["errors"]] == [(["input", "effectiveFrom"], "PERIOD_CLOSED")]
    assert await _charges(api, net.owner.key, service_id, "2026-09") == OLD_PLAN
    # The first open period may still change, and the closed one keeps its plan.
    assert (await _change(api, net.owner.key, service_id, effectiveFrom="2026-10"))["errors"] == []
    assert await _charges(api, net.owner.key, service_id, "2026-09") == OLD_PLAN
    assert await _charges(api, net.owner.key, service_id, "2026-10") == NEW_PLAN

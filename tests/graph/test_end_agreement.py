"""endAgreement: an agreement stops at a period boundary; the periods before it keep it."""

from datetime import UTC, datetime

import pytest

from graph.ids import split_global_id, to_global_id
from models import ClosedPeriod
from tests.graph.conftest import CAR_SHARING_CHARGES, new_network

END_AGREEMENT = """
mutation($input: EndAgreementInput!) {
  endAgreement(input: $input) {
    agreement { id payer { name } payee { name } effectiveFrom effectiveTo }
    errors { field code message }
  }
}"""

CHAIN = """
query($id: ID!, $period: String) {
  valueChain(serviceId: $id, period: $period) { agreements { payer { name } payee { name } effectiveTo } }
}"""

NOW = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)
PERCENT = {"kind": "PERCENT", "percent": "10"}


@pytest.fixture
async def car_sharing(api, rt):
    """On 2026-11-15 (first period 2026-10): the owner pays CityCar, CityCar pays FleetCare, from 2026-10."""
    rt.clock = lambda: NOW
    net = await new_network(api, "Mobility", firstPeriod="2026-10")
    citycar = await net.onboard("CityCar", "PROVIDER")
    fleetcare = await net.onboard("FleetCare")
    service_id = await net.service("Car sharing", citycar, CAR_SHARING_CHARGES)
    owner_leg = await net.agree(net.owner, citycar, service_id, {"kind": "PERCENT", "percent": "85"}, effectiveFrom="2026-10")
    fleet_leg = await net.agree(citycar, fleetcare, service_id, PERCENT, by=net.owner, effectiveFrom="2026-10")
    assert owner_leg["errors"] == fleet_leg["errors"] == []
    return net, service_id, owner_leg["agreement"]["id"], fleet_leg["agreement"]["id"]


async def _chain(api, net, service_id: str, period: str | None = None) -> list[tuple[str, str]]:
    chain = (await api.data(CHAIN, {"id": service_id, "period": period}, net.owner.key))["valueChain"]
    return [(a["payer"]["name"], a["payee"]["name"]) for a in chain["agreements"]]


async def _end(api, key: str, agreement_id: str, effective_to: str) -> dict:
    return (await api.data(END_AGREEMENT, {"input": {"agreementId": agreement_id, "effectiveTo": effective_to}}, key))[
        "endAgreement"
    ]


async def test_an_ended_agreement_leaves_the_chain_from_its_end_on(api, car_sharing):
    net, service_id, _, fleet_leg = car_sharing
    payload = await _end(api, net.owner.key, fleet_leg, "2026-12")
    assert payload == {
        "agreement": {
            "id": fleet_leg,
            "payer": {"name": "CityCar"},
            "payee": {"name": "FleetCare"},
            "effectiveFrom": "2026-10",
            "effectiveTo": "2026-12",
        },
        "errors": [],
    }
    both = [("Mobility owner", "CityCar"), ("CityCar", "FleetCare")]
    assert await _chain(api, net, service_id) == both
    assert await _chain(api, net, service_id, "2026-10") == both
    assert await _chain(api, net, service_id, "2026-12") == [("Mobility owner", "CityCar")]
    assert await _chain(api, net, service_id, "2027-05") == [("Mobility owner", "CityCar")]


async def test_the_payer_ends_its_own_agreement(api, car_sharing):
    net, service_id, _, fleet_leg = car_sharing
    payload = await _end(api, net.members["CityCar"].key, fleet_leg, "2026-11")
    assert payload["errors"] == []
    assert await _chain(api, net, service_id) == [("Mobility owner", "CityCar")]
    assert await _chain(api, net, service_id, "2026-10") == [("Mobility owner", "CityCar"), ("CityCar", "FleetCare")]


@pytest.mark.parametrize("effective_to", ["2026-10", "2026-09"])
async def test_an_end_not_after_the_start_is_invalid(api, car_sharing, effective_to):
    net, service_id, _, fleet_leg = car_sharing
    payload = await _end(api, net.owner.key, fleet_leg, effective_to)
    assert payload["agreement"] is None
    assert [(e["field"], e["code"]) for e in payload["errors"]] == [(["input", "effectiveTo"], "INVALID")]
    assert "2026-10" in payload["errors"][0]["message"]
    assert await _chain(api, net, service_id, "2027-01") == [("Mobility owner", "CityCar"), ("CityCar", "FleetCare")]


async def test_an_end_that_is_no_period_key_is_refused(api, car_sharing):
    net, _, _, fleet_leg = car_sharing
    payload = await _end(api, net.owner.key, fleet_leg, "December")
    assert [(e["field"], e["code"]) for e in payload["errors"]] == [(["input", "effectiveTo"], "INVALID_PERIOD")]


async def test_the_payee_cannot_end_the_agreement_that_pays_it(api, car_sharing):
    net, service_id, owner_leg, fleet_leg = car_sharing
    for agreement_id, payee in ((fleet_leg, "FleetCare"), (owner_leg, "CityCar")):
        payload = await _end(api, net.members[payee].key, agreement_id, "2026-12")
        assert payload["agreement"] is None
        assert [(e["field"], e["code"]) for e in payload["errors"]] == [(["input", "agreementId"], "FORBIDDEN_PAYER")]
    assert await _chain(api, net, service_id, "2027-01") == [("Mobility owner", "CityCar"), ("CityCar", "FleetCare")]


async def test_a_partner_outside_the_chain_does_not_find_the_agreement(api, car_sharing):
    net, service_id, _, fleet_leg = car_sharing
    stranger = await net.onboard("Stranger")
    other = await new_network(api, "Other")
    for key in (stranger.key, other.owner.key):
        payload = await _end(api, key, fleet_leg, "2026-12")
        assert [(e["field"], e["code"]) for e in payload["errors"]] == [(["input", "agreementId"], "NOT_FOUND")]
    for bad_id in ("garbage", to_global_id("Agreement", 10**12), service_id):
        payload = await _end(api, net.owner.key, bad_id, "2026-12")
        assert [(e["field"], e["code"]) for e in payload["errors"]] == [(["input", "agreementId"], "NOT_FOUND")]
    assert await _chain(api, net, service_id, "2027-01") == [("Mobility owner", "CityCar"), ("CityCar", "FleetCare")]


async def test_an_end_in_a_closed_period_is_refused(api, rt, car_sharing):
    net, service_id, _, fleet_leg = car_sharing
    async with rt.sessions.begin() as session:
        session.add(ClosedPeriod(network_id=int(split_global_id(net.id)[1]), key="2026-10", closed_at=NOW))
    payload = await _end(api, net.owner.key, fleet_leg, "2026-11")
    assert payload["errors"] == []
    # The end now lies in an open period; moving it into a closed one would rewrite history.
    async with rt.sessions.begin() as session:
        session.add(ClosedPeriod(network_id=int(split_global_id(net.id)[1]), key="2026-11", closed_at=NOW))
    payload = await _end(api, net.owner.key, fleet_leg, "2026-12")
    assert [(e["field"], e["code"]) for e in payload["errors"]] == [(["input", "effectiveTo"], "PERIOD_CLOSED")]
    assert await _chain(api, net, service_id, "2026-10") == [("Mobility owner", "CityCar"), ("CityCar", "FleetCare")]
    assert await _chain(api, net, service_id, "2026-11") == [("Mobility owner", "CityCar")]


async def test_an_end_may_be_moved_earlier(api, car_sharing):
    net, service_id, _, fleet_leg = car_sharing
    assert (await _end(api, net.owner.key, fleet_leg, "2027-03"))["errors"] == []
    assert (await _end(api, net.owner.key, fleet_leg, "2026-12"))["errors"] == []
    assert await _chain(api, net, service_id, "2026-12") == [("Mobility owner", "CityCar")]


async def test_moving_an_end_later_may_not_close_a_cycle(api, car_sharing):
    """FleetCare pays CityCar only once CityCar's leg to FleetCare has ended; extending that leg
    again would make the two pay each other in the same periods."""
    net, service_id, _, fleet_leg = car_sharing
    citycar, fleetcare = net.members["CityCar"], net.members["FleetCare"]
    assert (await _end(api, net.owner.key, fleet_leg, "2026-12"))["errors"] == []
    reverse = await net.agree(fleetcare, citycar, service_id, PERCENT, effectiveFrom="2026-12")
    assert reverse["errors"] == []
    payload = await _end(api, net.owner.key, fleet_leg, "2027-02")
    assert payload["agreement"] is None
    assert [(e["field"], e["code"]) for e in payload["errors"]] == [(["input", "effectiveTo"], "AGREEMENT_CYCLE")]
    assert await _chain(api, net, service_id, "2026-12") == [("Mobility owner", "CityCar"), ("FleetCare", "CityCar")]

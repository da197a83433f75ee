"""onboardPartner: a provider or partner joins the network with its agreements and a key, all or nothing."""

import pytest

from graph.ids import to_global_id
from tests.graph.conftest import CAR_SHARING_CHARGES, new_network

ONBOARD_PARTNER = """
mutation($input: OnboardPartnerInput!) {
  onboardPartner(input: $input) {
    party { name kind externalRef active }
    agreements { payer { name } payee { name } service { name } effectiveFrom rule { kind percent amount metric } }
    apiKey
    errors { field code message }
  }
}"""

ME = "{ me { party { name kind } network { name } } }"
PARTIES = "{ network { parties { edges { node { name kind } } } } }"
CHAIN = """
query($id: ID!) { valueChain(serviceId: $id) { agreements { payer { name } payee { name } } } }"""


@pytest.fixture
async def car_sharing(network):
    citycar = await network.onboard("CityCar", "PROVIDER")
    service_id = await network.service("Car sharing", citycar, CAR_SHARING_CHARGES)
    return network, service_id


async def _onboard(api, key: str, **input) -> dict:
    return (await api.data(ONBOARD_PARTNER, {"input": input}, key))["onboardPartner"]


async def _party_names(api, net) -> list[str]:
    edges = (await api.data(PARTIES, key=net.owner.key))["network"]["parties"]["edges"]
    return [edge["node"]["name"] for edge in edges]


async def _chain(api, net, service_id: str) -> list[tuple[str, str]]:
    chain = (await api.data(CHAIN, {"id": service_id}, net.owner.key))["valueChain"]
    return [(a["payer"]["name"], a["payee"]["name"]) for a in chain["agreements"]]


async def test_the_owner_onboards_a_partner_with_agreements_and_a_key(api, car_sharing):
    net, service_id = car_sharing
    payload = await _onboard(
        api,
        net.owner.key,
        name="  ParkSpace  ",
        kind="PARTNER",
        externalRef="crm-4711",
        issueApiKey=True,
        agreements=[
            {"serviceId": service_id, "rule": {"kind": "PER_UNIT", "amount": "0.02", "metric": "minutes"}},
            {"serviceId": service_id, "rule": {"kind": "PERCENT", "percent": "1.5"}},
        ],
    )
    assert payload["errors"] == []
    assert payload["party"] == {"name": "ParkSpace", "kind": "PARTNER", "externalRef": "crm-4711", "active": True}
    assert payload["agreements"] == [
        {"payer": {"name": "Test network owner"}, "payee": {"name": "ParkSpace"}, "service": {"name": "Car sharing"},
         "effectiveFrom": payload["agreements"][0]["effectiveFrom"],
         "rule": {"kind": "PER_UNIT", "percent": None, "amount": "0.02", "metric": "minutes"}},
        {"payer": {"name": "Test network owner"}, "payee": {"name": "ParkSpace"}, "service": {"name": "Car sharing"},
         "effectiveFrom": payload["agreements"][0]["effectiveFrom"],
         "rule": {"kind": "PERCENT", "percent": "1.5", "amount": None, "metric": None}},
    ]
    assert payload["apiKey"].startswith("sf_")
    assert await api.data(ME, key=payload["apiKey"]) == {
        "me": {"party": {"name": "ParkSpace", "kind": "PARTNER"}, "network": {"name": "Test network"}}
    }
    assert await _chain(api, net, service_id) == [("Test network owner", "ParkSpace")] * 2


async def test_without_issue_api_key_no_key_is_shown(api, network):
    payload = await _onboard(api, network.owner.key, name="CityCar", kind="PROVIDER")
    assert payload["errors"] == []
    assert payload["apiKey"] is None
    assert payload["agreements"] == []
    assert payload["party"]["kind"] == "PROVIDER"


async def test_a_partner_onboards_a_sub_partner_paid_out_of_its_own_income(api, car_sharing):
    net, service_id = car_sharing
    helpdesk = await net.onboard(
        "HelpDesk24", agreements=[{"serviceId": service_id, "rule": {"kind": "PERCENT", "percent": "2"}}]
    )
    payload = await _onboard(
        api,
        helpdesk.key,
        name="CallCenter Nord",
        kind="PARTNER",
        issueApiKey=True,
        agreements=[{"serviceId": service_id, "rule": {"kind": "PERCENT", "percent": "40"}}],
    )
    assert payload["errors"] == []
    assert [(a["payer"]["name"], a["payee"]["name"]) for a in payload["agreements"]] == [("HelpDesk24", "CallCenter Nord")]
    assert await _chain(api, net, service_id) == [("Test network owner", "HelpDesk24"), ("HelpDesk24", "CallCenter Nord")]
    assert (await api.data(ME, key=payload["apiKey"]))["me"]["party"] == {"name": "CallCenter Nord", "kind": "PARTNER"}


async def test_one_bad_agreement_means_nothing_is_onboarded(api, car_sharing):
    net, service_id = car_sharing
    before = await _party_names(api, net)
    payload = await _onboard(
        api,
        net.owner.key,
        name="ParkSpace",
        kind="PARTNER",
        issueApiKey=True,
        agreements=[
            {"serviceId": service_id, "rule": {"kind": "PERCENT", "percent": "2"}},
            {"serviceId": service_id, "rule": {"kind": "PERCENT", "percent": "140"}},
        ],
    )
    assert payload["party"] is None
    assert payload["agreements"] == []
    assert payload["apiKey"] is None
    assert [(e["field"], e["code"]) for e in payload["errors"]] == [(["input", "agreements", "1", "rule", "percent"], "INVALID")]
    assert await _party_names(api, net) == before
    assert await _chain(api, net, service_id) == []


async def test_every_bad_agreement_is_reported_with_its_index(api, car_sharing):
    net, service_id = car_sharing
    payload = await _onboard(
        api,
        net.owner.key,
        name="ParkSpace",
        kind="PARTNER",
        agreements=[
            {"serviceId": service_id, "rule": {"kind": "PERCENT", "percent": "2"}},
            {"serviceId": service_id, "rule": {"kind": "PER_EVENT", "amount": "0.5", "metric": "km"}},
            {"serviceId": service_id, "rule": {"kind": "PERCENT", "percent": "2"}, "effectiveFrom": "1999-01"},
            {"serviceId": to_global_id("Service", 10**12), "rule": {"kind": "PERCENT", "percent": "2"}},
        ],
    )
    assert payload["party"] is None
    assert sorted((e["field"], e["code"]) for e in payload["errors"]) == [
        (["input", "agreements", "1", "rule", "metric"], "UNKNOWN_METRIC"),
        (["input", "agreements", "2", "effectiveFrom"], "BEFORE_FIRST_PERIOD"),
        (["input", "agreements", "3", "serviceId"], "NOT_FOUND"),
    ]
    assert "ParkSpace" not in await _party_names(api, net)


async def test_an_id_that_is_no_global_id_is_not_found_at_its_index(api, car_sharing):
    net, service_id = car_sharing
    payload = await _onboard(
        api,
        net.owner.key,
        name="ParkSpace",
        kind="PARTNER",
        agreements=[
            {"serviceId": service_id, "rule": {"kind": "PERCENT", "percent": "2"}},
            {"serviceId": "garbage", "payeeId": "more garbage", "rule": {"kind": "PERCENT", "percent": "2"}},
        ],
    )
    assert payload["party"] is None
    assert [(e["field"], e["code"]) for e in payload["errors"]] == [
        (["input", "agreements", "1", "serviceId"], "NOT_FOUND"),
    ]
    assert "ParkSpace" not in await _party_names(api, net)


async def test_a_partner_cannot_make_the_owner_pay_its_sub_partner(api, car_sharing):
    net, service_id = car_sharing
    helpdesk = await net.onboard(
        "HelpDesk24", agreements=[{"serviceId": service_id, "rule": {"kind": "PERCENT", "percent": "2"}}]
    )
    payload = await _onboard(
        api,
        helpdesk.key,
        name="CallCenter Nord",
        kind="PARTNER",
        agreements=[{"payerId": net.owner.id, "serviceId": service_id, "rule": {"kind": "PERCENT", "percent": "40"}}],
    )
    assert payload["party"] is None
    assert [(e["field"], e["code"]) for e in payload["errors"]] == [(["input", "agreements", "0", "payerId"], "FORBIDDEN_PAYER")]
    assert "CallCenter Nord" not in await _party_names(api, net)
    assert await _chain(api, net, service_id) == [("Test network owner", "HelpDesk24")]


@pytest.mark.parametrize("kind", ["CONSUMER", "OWNER"])
async def test_only_providers_and_partners_can_be_onboarded(api, network, kind):
    before = await _party_names(api, network)
    payload = await _onboard(api, network.owner.key, name="Someone", kind=kind, issueApiKey=True)
    assert payload["party"] is None
    assert payload["apiKey"] is None
    assert [(e["field"], e["code"]) for e in payload["errors"]] == [(["input", "kind"], "INVALID")]
    assert await _party_names(api, network) == before


@pytest.mark.parametrize(
    ("name", "external_ref", "field"),
    [
        ("", None, "name"),
        ("   ", None, "name"),
        ("x" * 10_000, None, "name"),
        ("Tab\tbed", None, "name"),
        ("ParkSpace", "r" * 10_000, "externalRef"),
        ("ParkSpace", " ", "externalRef"),
    ],
    ids=["empty name", "blank name", "10000-character name", "control character", "long reference", "blank reference"],
)
async def test_bad_names_and_references_are_refused(api, network, name, external_ref, field):
    before = await _party_names(api, network)
    payload = await _onboard(api, network.owner.key, name=name, kind="PARTNER", externalRef=external_ref)
    assert payload["party"] is None
    assert [(e["field"], e["code"]) for e in payload["errors"]] == [(["input", field], "INVALID")]
    assert await _party_names(api, network) == before


async def test_every_problem_of_the_party_is_reported_at_once(api, network):
    payload = await _onboard(api, network.owner.key, name="", kind="CONSUMER", externalRef="")
    assert sorted(e["field"][-1] for e in payload["errors"]) == ["externalRef", "kind", "name"]


async def test_an_agreement_paying_a_party_of_another_network_is_refused(api, car_sharing):
    net, service_id = car_sharing
    other = await new_network(api, "Other")
    foreign = await other.onboard("Foreign")
    payload = await _onboard(
        api,
        net.owner.key,
        name="ParkSpace",
        kind="PARTNER",
        agreements=[{"payeeId": foreign.id, "serviceId": service_id, "rule": {"kind": "PERCENT", "percent": "2"}}],
    )
    assert [(e["field"], e["code"]) for e in payload["errors"]] == [(["input", "agreements", "0", "payeeId"], "NOT_FOUND")]
    assert "ParkSpace" not in await _party_names(api, net)
    assert await _chain(api, net, service_id) == []


async def test_a_partner_onboarding_a_sub_partner_cannot_name_a_party_it_cannot_see_as_payee(api, car_sharing):
    """HelpDesk24 onboards a sub-partner and, in the same call, names as payee ParkSpace (in no
    chain of its own) or a forged id: the same answer for both, and nothing is onboarded."""
    net, service_id = car_sharing
    helpdesk = await net.onboard(
        "HelpDesk24", agreements=[{"serviceId": service_id, "rule": {"kind": "PERCENT", "percent": "2"}}]
    )
    parkspace = await net.onboard("ParkSpace")
    before = await _party_names(api, net)

    async def naming(payee_id: str) -> dict:
        return await _onboard(
            api, helpdesk.key, name="CallCenter Nord", kind="PARTNER", issueApiKey=True,
            agreements=[
                {"serviceId": service_id, "rule": {"kind": "PERCENT", "percent": "40"}},
                {"payeeId": payee_id, "serviceId": service_id, "rule": {"kind": "PERCENT", "percent": "10"}},
            ],
        )

    hidden, forged = await naming(parkspace.id), await naming(to_global_id("Party", 10**12))
    assert hidden == forged == {
        "party": None, "agreements": [], "apiKey": None,
        "errors": [{"field": ["input", "agreements", "1", "payeeId"], "code": "NOT_FOUND", "message": "payee not found"}],
    }
    assert await _party_names(api, net) == before
    assert await _chain(api, net, service_id) == [("Test network owner", "HelpDesk24")]

"""Builders of small networks through the API itself, for the API tests."""

from dataclasses import dataclass, field

import pytest

from tests.conftest import OPERATOR_KEY, Api

CREATE_NETWORK = """
mutation($input: CreateNetworkInput!) {
  createNetwork(input: $input) {
    network { id name currency timeZone owner { id name } }
    ownerApiKey
    errors { field code message }
  }
}"""

ONBOARD = """
mutation($input: OnboardPartnerInput!) {
  onboardPartner(input: $input) {
    party { id name kind }
    agreements { id payer { id } payee { id } effectiveFrom }
    apiKey
    errors { field code message }
  }
}"""

CREATE_SERVICE = """
mutation($input: CreateServiceInput!) {
  createService(input: $input) {
    service { id name currency provider { id } billedBy { id } }
    errors { field code message }
  }
}"""

ADD_AGREEMENT = """
mutation($input: AgreementInput!) {
  addAgreement(input: $input) {
    agreement { id payer { id name } payee { id name } effectiveFrom effectiveTo rule { kind percent amount metric base weight priority min max } }
    errors { field code message }
  }
}"""


@dataclass
class Member:
    id: str
    key: str
    name: str


@dataclass
class Network:
    """A network built through the API: its owner and whoever a test onboards."""

    api: Api
    id: str
    owner: Member
    members: dict[str, Member] = field(default_factory=dict)

    async def onboard(self, name: str, kind: str = "PARTNER", by: Member | None = None, agreements=None) -> Member:
        payload = (
            await self.api.data(
                ONBOARD,
                {"input": {"name": name, "kind": kind, "issueApiKey": True, "agreements": agreements or []}},
                (by or self.owner).key,
            )
        )["onboardPartner"]
        assert payload["errors"] == [], payload["errors"]
        member = Member(payload["party"]["id"], payload["apiKey"], name)
        self.members[name] = member
        return member

    async def service(self, name: str, provider: Member, charges: list[dict], billed_by: Member | None = None) -> str:
        payload = (
            await self.api.data(
                CREATE_SERVICE,
                {
                    "input": {
                        "name": name,
                        "providerId": provider.id,
                        "billedById": billed_by.id if billed_by else None,
                        "charges": charges,
                    }
                },
                self.owner.key,
            )
        )["createService"]
        assert payload["errors"] == [], payload["errors"]
        return payload["service"]["id"]

    async def agree(self, payer: Member, payee: Member, service_id: str, rule: dict, by: Member | None = None,
                    **extra) -> dict:
        """An agreement made by its payer, or `by` the owner (a payer names only payees it can see);
        returns the payload (agreement and errors)."""
        return (
            await self.api.data(
                ADD_AGREEMENT,
                {"input": {"payerId": payer.id, "payeeId": payee.id, "serviceId": service_id, "rule": rule, **extra}},
                (by or payer).key,
            )
        )["addAgreement"]


async def new_network(api: Api, name: str = "Test network", **extra) -> Network:
    payload = (
        await api.data(
            CREATE_NETWORK,
            {"input": {"name": name, "currency": "EUR", "ownerName": f"{name} owner", **extra}},
            OPERATOR_KEY,
        )
    )["createNetwork"]
    assert payload["errors"] == [], payload["errors"]
    owner = payload["network"]["owner"]
    return Network(api, payload["network"]["id"], Member(owner["id"], payload["ownerApiKey"], owner["name"]))


CAR_SHARING_CHARGES = [
    {"metric": "minutes", "model": "PER_UNIT", "unitPrice": "0.29"},
    {"metric": "rental", "model": "FLAT", "unitPrice": "1.00"},
]


@dataclass
class Mobility:
    """The worked example of DESIGN §5, built through the API."""

    net: Network
    service_id: str
    citycar: Member
    fleetcare: Member
    parkspace: Member
    helpdesk: Member
    callcenter: Member


async def mobility_network(api: Api, first_period: str | None = None) -> Mobility:
    """The example; with `first_period`, a backfill network whose agreements start then."""
    extra = {"firstPeriod": first_period} if first_period else {}
    net = await new_network(api, "Mobility", **extra)
    citycar = await net.onboard("CityCar", "PROVIDER")
    fleetcare = await net.onboard("FleetCare")
    parkspace = await net.onboard("ParkSpace")
    helpdesk = await net.onboard("HelpDesk24")
    callcenter = await net.onboard("CallCenter Nord")
    service = await net.service("Car sharing", citycar, CAR_SHARING_CHARGES)
    for payer, payee, rule in [
        (net.owner, helpdesk, {"kind": "PERCENT", "percent": "2"}),
        (net.owner, parkspace, {"kind": "PER_UNIT", "amount": "0.02", "metric": "minutes"}),
        (net.owner, citycar, {"kind": "PERCENT", "percent": "85"}),
        (citycar, fleetcare, {"kind": "PER_EVENT", "amount": "0.50", "metric": "rental"}),
        (helpdesk, callcenter, {"kind": "PERCENT", "percent": "40"}),
    ]:
        # the owner draws the chain: FleetCare and CallCenter Nord are in none yet, so their payers cannot see them
        payload = await net.agree(payer, payee, service, rule, by=net.owner,
                                  **({"effectiveFrom": first_period} if first_period else {}))
        assert payload["errors"] == [], payload["errors"]
    return Mobility(net, service, citycar, fleetcare, parkspace, helpdesk, callcenter)


@pytest.fixture
async def network(api) -> Network:
    return await new_network(api)


@pytest.fixture
async def mobility(api) -> Mobility:
    return await mobility_network(api)

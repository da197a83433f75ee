import pytest

from tests.conftest import OPERATOR_KEY
from tests.graph.conftest import CREATE_NETWORK

COUNT = "{ network { parties { edges { node { name } } } } }"


def network_input(**overrides) -> dict:
    return {"input": {"name": "Ride", "currency": "EUR", "ownerName": "Ride GmbH", **overrides}}


async def test_the_operator_creates_a_network_with_its_owner_and_a_working_key(api):
    payload = (await api.data(CREATE_NETWORK, network_input(timeZone="Europe/Berlin"), OPERATOR_KEY))["createNetwork"]
    assert payload["errors"] == []
    assert payload["network"]["name"] == "Ride"
    assert payload["network"]["timeZone"] == "Europe/Berlin"
    assert payload["network"]["owner"]["name"] == "Ride GmbH"
    assert payload["ownerApiKey"].startswith("sf_")
    me = await api.data("{ me { party { name kind } } }", key=payload["ownerApiKey"])
    assert me["me"]["party"] == {"name": "Ride GmbH", "kind": "OWNER"}


async def test_a_backfill_network_lists_its_periods_from_the_first_one(api):
    payload = (await api.data(CREATE_NETWORK, network_input(firstPeriod="2026-01"), OPERATOR_KEY))["createNetwork"]
    periods = (await api.data("{ network { periods { key status startsAt } } }", key=payload["ownerApiKey"]))[
        "network"
    ]["periods"]
    assert periods[0] == {"key": "2026-01", "status": "OPEN", "startsAt": "2026-01-01T00:00:00+00:00"}
    assert [p["key"] for p in periods] == sorted(p["key"] for p in periods)


async def test_an_owner_key_may_not_create_networks(api, network):
    assert await api.error_code(CREATE_NETWORK, network_input(), network.owner.key) == "FORBIDDEN"


async def test_without_a_key_nothing_is_created(api):
    assert await api.error_code(CREATE_NETWORK, network_input()) == "UNAUTHENTICATED"


@pytest.mark.parametrize(
    ("overrides", "field", "code"),
    [
        ({"name": ""}, ["input", "name"], "INVALID"),
        ({"name": "   "}, ["input", "name"], "INVALID"),
        ({"name": "x" * 10_000}, ["input", "name"], "INVALID"),
        ({"ownerName": ""}, ["input", "ownerName"], "INVALID"),
        ({"currency": "EURO"}, ["input", "currency"], "INVALID_CURRENCY"),
        ({"currency": "eur"}, ["input", "currency"], "INVALID_CURRENCY"),
        ({"currency": "XAU"}, ["input", "currency"], "INVALID_CURRENCY"),
        ({"timeZone": "Mars/Olympus"}, ["input", "timeZone"], "INVALID_TIME_ZONE"),
        ({"firstPeriod": "2026-13"}, ["input", "firstPeriod"], "INVALID_PERIOD"),
        ({"firstPeriod": "2999-01"}, ["input", "firstPeriod"], "INVALID"),
    ],
    ids=[
        "empty-name",
        "blank-name",
        "huge-name",
        "empty-owner",
        "four-letter-currency",
        "lowercase-currency",
        "currency-without-minor-units",
        "unknown-time-zone",
        "month-13",
        "first-period-in-the-future",
    ],
)
async def test_bad_input_is_refused_with_its_field_and_code(api, overrides, field, code):
    payload = (await api.data(CREATE_NETWORK, network_input(**overrides), OPERATOR_KEY))["createNetwork"]
    assert payload["network"] is None and payload["ownerApiKey"] is None
    assert {"field": field, "code": code} in [{"field": e["field"], "code": e["code"]} for e in payload["errors"]]


async def test_every_problem_is_reported_at_once(api):
    payload = (await api.data(CREATE_NETWORK, network_input(name="", currency="XXXX"), OPERATOR_KEY))["createNetwork"]
    assert sorted(e["field"][-1] for e in payload["errors"]) == ["currency", "name"]


async def test_a_refused_network_writes_nothing(api, rt):
    from sqlalchemy import func, select

    from models import Network

    async with rt.sessions() as session:
        before = await session.scalar(select(func.count()).select_from(Network))
    await api.data(CREATE_NETWORK, network_input(currency="NOPE"), OPERATOR_KEY)
    async with rt.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Network)) == before

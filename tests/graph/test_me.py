from tests.conftest import OPERATOR_KEY

ME = "{ me { party { name kind } network { name currency roundingMode timeZone } } }"


async def test_an_owner_key_answers_who_it_is(api, network):
    data = await api.data(ME, key=network.owner.key)
    assert data["me"] == {
        "party": {"name": "Test network owner", "kind": "OWNER"},
        "network": {"name": "Test network", "currency": "EUR", "roundingMode": "HALF_UP", "timeZone": "UTC"},
    }


async def test_a_partner_key_answers_as_the_partner(api, network):
    partner = await network.onboard("ParkSpace")
    data = await api.data(ME, key=partner.key)
    assert data["me"]["party"] == {"name": "ParkSpace", "kind": "PARTNER"}


async def test_without_a_key_only_unauthenticated_comes_back(api):
    body = await api.post(ME)
    assert body == {"data": None, "errors": [{"message": "a valid API key is required", "extensions": {"code": "UNAUTHENTICATED"}}]}


async def test_an_unknown_key_is_unauthenticated(api, network):
    forged = network.owner.key[:-4] + "AAAA"
    assert await api.error_code(ME, key=forged) == "UNAUTHENTICATED"
    assert await api.error_code(ME, key="not-a-key") == "UNAUTHENTICATED"


async def test_the_operator_key_has_no_party_to_answer_for(api):
    assert await api.error_code(ME, key=OPERATOR_KEY) == "FORBIDDEN"


async def test_the_schema_can_be_read_without_a_key(api):
    body = await api.post("{ __schema { queryType { name } } }")
    assert body["data"]["__schema"]["queryType"]["name"] == "Query"

"""application/graphql-response+json through the app itself: the media type is echoed when asked
for, request errors answer 400 without `data`, and the fast path for known queries (which answers
only plain application/json) never answers in the other media type's place."""

import pytest

from graph.view import wants_graphql_response
from tests.graph.conftest import new_network

ME = "{ me { party { name } } }"
GRAPHQL_RESPONSE = "application/graphql-response+json"


@pytest.fixture
async def network(api):
    return await new_network(api)


@pytest.mark.parametrize(("accept", "wanted"), [
    (None, False),
    ("*/*", False),
    ("application/json", False),
    (GRAPHQL_RESPONSE, True),
    (f"{GRAPHQL_RESPONSE}, application/json", True),
    (f"application/json, {GRAPHQL_RESPONSE}", True),
    (f"{GRAPHQL_RESPONSE};q=0.5, application/json", False),
    (f"{GRAPHQL_RESPONSE};q=0.9, application/json;q=0.8", True),
    (f"{GRAPHQL_RESPONSE};q=0", False),
])
def test_the_accept_header_decides_the_media_type(accept, wanted):
    assert wants_graphql_response(accept) is wanted


async def test_a_known_query_is_answered_in_the_media_type_asked_for(client, network):
    headers = {"Authorization": f"Bearer {network.owner.key}"}
    for _ in range(2):  # the second time the text is known: the fast path would take plain JSON
        plain = await client.post("/graphql", json={"query": ME}, headers=headers)
        assert plain.headers["content-type"] == "application/json"
        asked = await client.post("/graphql", json={"query": ME}, headers={**headers, "Accept": GRAPHQL_RESPONSE})
        assert asked.status_code == 200
        assert asked.headers["content-type"] == f"{GRAPHQL_RESPONSE}; charset=utf-8"
        assert asked.json() == plain.json() == {"data": {"me": {"party": {"name": network.owner.name}}}}


@pytest.mark.parametrize(("document", "variables"), [
    ("{ me { party { name } ", None),
    ("{ me { party { salary } } }", None),
    ("query($name: String!) { __type(name: $name) { name } }", {"name": 5}),
], ids=["parse", "validation", "variables"])
async def test_a_request_error_is_a_400_without_data(client, network, document, variables):
    headers = {"Authorization": f"Bearer {network.owner.key}", "Accept": GRAPHQL_RESPONSE}
    response = await client.post("/graphql", json={"query": document, "variables": variables}, headers=headers)
    assert response.status_code == 400
    assert "data" not in response.json() and response.json()["errors"]
    # In plain JSON the same request keeps its 200 and `data: null`.
    plain = await client.post("/graphql", json={"query": document, "variables": variables}, headers={"Authorization": headers["Authorization"]})
    assert plain.status_code == 200 and plain.json()["data"] is None


async def test_a_refusal_or_a_field_error_keeps_200_and_data(client, network):
    anonymous = await client.post("/graphql", json={"query": ME}, headers={"Accept": GRAPHQL_RESPONSE})
    assert anonymous.status_code == 200
    assert anonymous.json()["data"] is None and anonymous.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    missing = await client.post(
        "/graphql",
        json={"query": "query($id: ID!) { party(id: $id) { name } }", "variables": {"id": "UGFydHk6OTk5OTk5"}},
        headers={"Authorization": f"Bearer {network.owner.key}", "Accept": GRAPHQL_RESPONSE},
    )
    assert missing.status_code == 200 and "data" in missing.json()

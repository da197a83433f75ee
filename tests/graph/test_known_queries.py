"""A query text the gateway has validated before is answered without strawberry's HTTP view
(graph/view.py): its answers must be the very ones strawberry gives, whatever the body looks like."""

import json

import pytest

ME = "{ me { party { id name kind } network { id name currency } } }"


def _answer(response):
    return response.status_code, response.headers["content-type"], response.content


async def _post(client, key, body, **headers):
    return await client.post(
        "/graphql", content=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json", **headers},
    )


async def test_a_known_query_answers_as_the_first_time(client, network):
    body = json.dumps({"query": ME}).encode()
    first = await _post(client, network.owner.key, body)
    again = await _post(client, network.owner.key, body)
    assert _answer(again) == _answer(first)
    assert json.loads(again.content)["data"]["me"]["party"]["name"] == network.owner.name
    assert int(again.headers["content-length"]) == len(again.content)
    assert again.headers["x-request-id"] != first.headers["x-request-id"]


async def test_a_known_query_in_a_body_sent_in_pieces_answers_the_same(client, network):
    body = json.dumps({"query": ME}).encode()
    whole = await _post(client, network.owner.key, body)

    async def pieces():
        for start in range(0, len(body), 7):
            yield body[start:start + 7]

    chunked = await client.post(
        "/graphql", content=pieces(),
        headers={"Authorization": f"Bearer {network.owner.key}", "Content-Type": "application/json"},
    )
    assert _answer(chunked) == _answer(whole)


@pytest.mark.parametrize("key", ["owner", "unknown", "none"])
async def test_a_known_query_is_refused_as_before_without_a_working_key(client, network, key):
    body = json.dumps({"query": ME}).encode()
    await _post(client, network.owner.key, body)  # known from now on
    headers = {"Content-Type": "application/json"}
    if key != "none":
        headers["Authorization"] = "Bearer " + (network.owner.key if key == "owner" else "sf_000000000000_nothing")
    answers = [await client.post("/graphql", content=body, headers=headers) for _ in range(2)]
    assert _answer(answers[1]) == _answer(answers[0])
    payload = json.loads(answers[1].content)
    if key == "owner":
        assert payload["data"]["me"]["party"]["name"] == network.owner.name
    else:
        assert payload["data"] is None
        assert payload["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_a_known_query_with_an_error_is_shaped_as_before(client, network):
    body = json.dumps({"query": "query($id: ID!) { party(id: $id) { name } }", "variables": {"id": "bm90LWEtcGFydHk="}}).encode()
    answers = [await _post(client, network.owner.key, body) for _ in range(2)]
    assert _answer(answers[1]) == _answer(answers[0])
    assert json.loads(answers[1].content)["errors"][0]["extensions"]["code"] == "NOT_FOUND"


async def test_a_known_query_asked_for_graphql_response_json_keeps_that_type(client, network):
    body = json.dumps({"query": ME}).encode()
    await _post(client, network.owner.key, body)
    answer = await _post(client, network.owner.key, body, Accept="application/graphql-response+json")
    assert answer.headers["content-type"].startswith("application/graphql-response+json")
    assert json.loads(answer.content)["data"]["me"]["party"]["name"] == network.owner.name


async def test_a_known_query_follows_its_directives_on_every_request(client, network):
    query = "query($full: Boolean!) { me { party { id name @include(if: $full) } } }"
    answers = []
    for full in (True, False, True, False):
        body = json.dumps({"query": query, "variables": {"full": full}}).encode()
        answers.append(json.loads((await _post(client, network.owner.key, body)).content)["data"]["me"]["party"])
    assert [("name" in party) for party in answers] == [True, False, True, False]


async def test_known_queries_with_fragments_keep_their_own_selections(client, network):
    queries = [
        "fragment P on Party { id name } { me { party { ...P } network { id } } }",
        "fragment P on Party { kind } { me { party { ...P } } }",
    ]
    for _ in range(2):
        first, second = [
            json.loads((await _post(client, network.owner.key, json.dumps({"query": q}).encode())).content)["data"]["me"]
            for q in queries
        ]
        assert set(first["party"]) == {"id", "name"} and set(first) == {"party", "network"}
        assert set(second["party"]) == {"kind"} and set(second) == {"party"}


async def test_a_full_set_of_known_queries_forgets_only_its_oldest(client, network, monkeypatch):
    from graph import extensions

    monkeypatch.setattr(extensions, "_PREPARED_MAX", len(extensions.PREPARED) + 2)
    texts = [f"{{ me {{ party {{ {'id ' * (i + 1)}}} }} }}" for i in range(3)]
    for text in texts:
        await _post(client, network.owner.key, json.dumps({"query": text}).encode())
    assert texts[1] in extensions.PREPARED and texts[2] in extensions.PREPARED


async def test_a_body_handed_on_by_the_fast_path_is_decoded_once(client, network, monkeypatch):
    """A mutation always goes on to strawberry's view, which takes the body as the fast path
    decoded it; a body sent in pieces arrives whole and is taken alike."""
    import graph.view

    decoded = []
    loads = json.loads

    def counting(data, *args, **kwargs):
        decoded.append(data)
        return loads(data, *args, **kwargs)

    monkeypatch.setattr(json, "loads", counting)
    assert graph.view.json.loads is counting
    body = json.dumps({"query": "mutation($e: [UsageInput!]!) { recordUsage(events: $e) { accepted } }", "variables": {"e": []}}).encode()
    response = await _post(client, network.owner.key, body)
    assert response.json() == {"data": {"recordUsage": {"accepted": 0}}}
    assert [data for data in decoded if data == body] == [body]

"""A query text the gateway has validated before is answered without strawberry's HTTP view
(graph/view.py): its answers must be the very ones strawberry gives, whatever the body looks like."""

import contextlib
import json
import logging

import httpx
import pytest
from sqlalchemy import event
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route
from strawberry.asgi import GraphQL
from strawberry.extensions import SchemaExtension

from app.limits import Admission
from graph.schema import EXTENSIONS, build
from graph.view import GraphQLApp

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


async def test_a_body_handed_on_by_the_fast_path_is_not_decoded_again(engine_client, network, monkeypatch):
    """A mutation always goes on to strawberry's view, which takes the body as the fast path
    decoded it: strawberry's own decoding (the view's decode_json hook) does not run for it."""
    decoded = []
    strawberrys = GraphQL.decode_json

    def counting(self, data):
        decoded.append(data)
        return strawberrys(self, data)

    monkeypatch.setattr(GraphQL, "decode_json", counting)
    body = json.dumps({"query": "mutation($e: [UsageInput!]!) { recordUsage(events: $e) { accepted } }", "variables": {"e": []}}).encode()
    async with engine_client(True) as client:
        response = await _post(client, network.owner.key, body)
    assert response.json() == {"data": {"recordUsage": {"accepted": 0}}}
    assert body not in decoded


@contextlib.contextmanager
def statements(rt):
    """The SQL statements issued inside the block."""
    seen: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        if statement != "BEGIN":  # SQLite's explicit BEGIN (app/db.py) is no query
            seen.append(statement)

    event.listen(rt.engine.sync_engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(rt.engine.sync_engine, "before_cursor_execute", count)


@pytest.mark.parametrize("overrides", [True, False])
async def test_a_known_query_that_errors_is_executed_once(engine_client, network, rt, overrides):
    """A query whose one field is refused while another one reads the database: the read runs
    once per request, the first time (strawberry's path) as the next (the fast path)."""
    partner = await network.onboard("ParkSpace")
    query = 'query($id: ID!) { party(id: $id) { name } node(id: "not a global id") { id } }'
    body = json.dumps({"query": query, "variables": {"id": partner.id}}).encode()
    answers, issued = [], []
    async with engine_client(overrides) as client:
        for _ in range(3):
            with statements(rt) as seen:
                answers.append(await _post(client, network.owner.key, body))
            issued.append(len(seen))
    assert _answer(answers[2]) == _answer(answers[1]) == _answer(answers[0])
    assert json.loads(answers[0].content)["errors"][0]["extensions"]["code"] == "NOT_FOUND"
    assert issued[2] == issued[1] == issued[0] > 0


class Stamped(SchemaExtension):
    """An extension the fast path does not know: it stamps every answer."""

    def get_results(self):
        return {"stamped": True}


async def test_a_schema_extension_the_fast_path_does_not_know_turns_it_off_with_a_warning(engine_runtime, rt, network, caplog):
    with caplog.at_level(logging.WARNING, logger="shareflow.graphql"):
        graphql = GraphQLApp(engine_runtime(True), schema=build(True, [*EXTENSIONS, Stamped]))
    assert any(r.levelno == logging.WARNING and "fast path off" in r.message and "Stamped" in r.message for r in caplog.records)
    app = Starlette(routes=[Route("/graphql", graphql, methods=["POST"])], middleware=[Middleware(Admission, rt=rt, limiter=None)])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://shareflow.test") as client:
        body = json.dumps({"query": ME}).encode()
        answers = [json.loads((await _post(client, network.owner.key, body)).content) for _ in range(2)]
    assert answers[1] == answers[0]
    assert answers[1]["extensions"] == {"stamped": True}  # the known query ran the extension too

"""The GraphQL engine's overrides (graph/engine/) on and off answer the same.

A representative set of operations (queries, known and new, with errors; mutations, recordUsage
with variables, inline and refused; subscriptions over both protocols) runs through an app with the
overrides on and one with them off, each on a network of its own built the same way: the answers
are the same, global ids compared by the order in which they first appear."""

from datetime import UTC, datetime

import pytest

from app.server.app import create_app
from app.settings import Settings
from graph.ids import split_global_id
from tests.conftest import Api
from tests.graph.conftest import mobility_network
from tests.graph.test_subscriptions import PROTOCOLS, GraphQLSocket, serve
from tests.servers import free_port

PARTY = "id name kind agreements { payer { name } payee { name } rule { kind percent amount metric } }"
QUERIES = [
    ("{ me { party { id name kind } network { id name currency } } }", {}),
    ("{ me { party { id name kind } network { id name currency } } }", {}),  # known now: the fast path
    (f"{{ network {{ name currency timeZone parties(first: 10) {{ edges {{ node {{ {PARTY} }} }} }} }} }}", {}),
    (f"query($party: ID!) {{ party(id: $party) {{ {PARTY} }} }}", "citycar"),
    ("query($id: ID!) { valueChain(serviceId: $id) { service { name } parties { name } agreements { payee { name } } } }", "service"),
    ("query($id: ID!) { party(id: $id) { name } node(id: \"not a global id\") { id } }", "citycar"),  # one field refused
    ("query($id: ID!) { party(id: $id) { name } node(id: \"not a global id\") { id } }", "citycar"),  # the same, known
    ("{ usageEvents(first: 20) { edges { node { id idempotencyKey metric quantity voided consumer { name } service { name } } } } }", {}),
    ("{ nothing }", {}),  # does not validate
    ("query($n: Int!) { usageEvents(first: $n) { edges { node { id } } } }", {"n": "ten"}),  # a variable that does not coerce
]
RECORD = """mutation($events: [UsageInput!]!) { recordUsage(events: $events) {
  accepted duplicates rejected
  results { index status event { id idempotencyKey quantity metric occurredAt consumer { name } } errors { field code message } }
  errors { field code message }
} }"""
INLINE = """mutation { recordUsage(events: [
  {idempotencyKey: "inline-1", serviceId: "%s", consumerRef: "bob", metric: "minutes", quantity: "12.5", occurredAt: "%s"},
  {idempotencyKey: "inline-2", serviceId: "%s", consumerRef: "bob", metric: "minutes", quantity: "-1", occurredAt: "%s"}
]) { accepted rejected results { index status event { idempotencyKey quantity } errors { field code } } } }"""
VOID = "mutation($key: String!) { voidUsage(idempotencyKey: $key) { event { idempotencyKey voided } errors { field code } } }"
UPDATED = """subscription($party: ID) { settlementUpdated(partyId: $party) {
  party { id name } period currency receivable { amount currency } payable { amount } net { amount }
} }"""


def _events(service_id: str, at: str) -> list[dict]:
    def one(key: str, **overrides) -> dict:
        return {"idempotencyKey": key, "serviceId": service_id, "consumerRef": "alice", "metric": "minutes",
                "quantity": "30", "occurredAt": at, **overrides}

    return [
        one("v-1"), one("v-2", metric="rental", quantity="1"),
        one("v-1"),  # a duplicate in the same batch
        one("v-3", quantity="1e400"),  # out of bounds
        one("v-4", serviceId="U2VydmljZTo5OTk5OTk5"),  # a service that does not exist
        one("v-5", metric="unknown"),
    ]


def _same_ids(answer: object) -> object:
    """The answer with each global id replaced by its type and the order it first appeared in."""
    seen: dict[str, str] = {}

    def walk(value):
        if isinstance(value, dict):
            return {key: walk(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [walk(item) for item in value]
        if isinstance(value, str):
            parts = split_global_id(value)
            if parts is not None and parts[1].isdigit():
                return seen.setdefault(value, f"{parts[0]}#{len(seen)}")
        return value

    return walk(answer)


async def _answers(client, ws_url: str, protocol: str, at: str) -> list:
    api = Api(client)
    mobility = await mobility_network(api)
    owner, citycar, sid = mobility.net.owner.key, mobility.citycar.key, mobility.service_id
    named = {"citycar": {"party": mobility.citycar.id, "id": mobility.citycar.id}, "service": {"id": sid}}
    answers = []

    async def ask(query: str, variables: dict | None, key: str) -> None:
        response = await client.post("/graphql", json={"query": query, "variables": variables},
                                     headers={"Authorization": f"Bearer {key}"})
        answers.append((response.status_code, response.json()))

    async with (
        GraphQLSocket.open(ws_url, protocol, f"Bearer {owner}") as owners,
        GraphQLSocket.open(ws_url, protocol, f"Bearer {citycar}") as its,
    ):
        watched = [(owners, await owners.subscribe(UPDATED, {"party": mobility.citycar.id})), (its, await its.subscribe(UPDATED))]
        for ws, op in watched:
            answers.append(await ws.next(op))
        await ask(RECORD, {"events": _events(sid, at)}, citycar)
        answers += [await ws.next(op) for ws, op in watched]
        await ask(INLINE % (sid, at, sid, at), None, citycar)
        answers += [await ws.next(op) for ws, op in watched]
        await ask(VOID, {"key": "v-2"}, citycar)
        answers += [await ws.next(op) for ws, op in watched]
        await ask(RECORD, {"events": [{"idempotencyKey": "x"}]}, citycar)  # refused as a whole: no message
        await ask(RECORD, {"events": _events(sid, at)[:2]}, citycar)  # duplicates only: no change
    for query, variables in QUERIES:
        await ask(query, named.get(variables, variables) if isinstance(variables, str) else variables, owner)
    return answers


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_the_overrides_on_and_off_answer_the_same(engine_client, engine_runtime, protocol):
    at = datetime.now(UTC).replace(microsecond=0, second=0).isoformat()
    answers = {}
    for overrides in (True, False):
        port = free_port()
        server, task = await serve(create_app(rt=engine_runtime(overrides)), port)
        try:
            async with engine_client(overrides) as client:
                answers[overrides] = _same_ids(await _answers(client, f"ws://127.0.0.1:{port}/graphql", protocol, at))
        finally:
            server.should_exit = True
            await task
    assert len(answers[True]) == len(answers[False]) == 4 * 2 + 5 + len(QUERIES)  # messages, mutations, queries
    for on, off in zip(answers[True], answers[False], strict=True):
        assert on == off


@pytest.mark.parametrize(("value", "overrides"), [("on", True), ("off", False), ("true", True), ("false", False), ("OFF", False)])
def test_the_switch_reads_on_and_off_as_well_as_true_and_false(monkeypatch, value, overrides):
    monkeypatch.setenv("SHAREFLOW_ENGINE_OVERRIDES", value)
    assert Settings().engine_overrides is overrides


def test_the_overrides_are_on_unless_switched_off(monkeypatch):
    monkeypatch.delenv("SHAREFLOW_ENGINE_OVERRIDES", raising=False)
    assert Settings().engine_overrides is True

"""Every text input goes through one check (app/services/text.py): a lone surrogate (valid JSON,
not UTF-8), a C0 or C1 control or DEL, a bidirectional control in a name, a blank or too long
text is refused with INVALID and its field path, per item, and nothing of it is written; the
text that passes is stored as sent."""

import json

import pytest

from tests.conftest import OPERATOR_KEY
from tests.graph.conftest import CAR_SHARING_CHARGES, CREATE_NETWORK, CREATE_SERVICE, ONBOARD
from tests.graph.test_record_usage import EVENTS, RECORD, event

MALFORMED = {
    "a lone surrogate": "ab\ud800cd",
    "a low surrogate": "\udc00",
    "a NUL": "ab\x00",
    "an escape": "ab\x1b[31m",
    "a newline": "ab\ncd",
    "a C1 control": "ab\x85cd",
    "a DEL": "ab\x7f",
    "blank": "   ",
    "too long": "k" * 201,
}
BIDI = {
    "a right-to-left override": "Evil\u202eCo",
    "a first-strong isolate": "Evil\u2068Co",
    "a right-to-left mark": "Evil\u200fCo",
    "an Arabic letter mark": "Evil\u061cCo",
}


async def post(client, query: str, variables: dict, key: str) -> dict:
    """A GraphQL request whose JSON escapes what is not ASCII, lone surrogates included (httpx's
    own encoding would refuse to send them)."""
    response = await client.post(
        "/graphql", content=json.dumps({"query": query, "variables": variables}),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    return response.json()


def payload_errors(body: dict, field: str) -> list[tuple[list[str], str]]:
    assert not body.get("errors"), body["errors"]
    return [(e["field"], e["code"]) for e in body["data"][field]["errors"]]


async def stored_keys(api, key: str) -> list[str]:
    return [e["node"]["idempotencyKey"] for e in (await api.data(EVENTS, key=key))["usageEvents"]["edges"]]


@pytest.mark.parametrize("text", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_text_in_usage_is_invalid_per_item_and_the_rest_is_recorded(client, api, mobility, text):
    sid = mobility.service_id
    events = [
        event(sid, text),
        event(sid, "bad-ref", consumerRef=text),
        event(sid, "bad-metric", metric=text),
        event(sid, "good"),
    ]
    body = await post(client, RECORD, {"events": events}, mobility.citycar.key)
    assert not body.get("errors"), body["errors"]
    payload = body["data"]["recordUsage"]
    assert (payload["accepted"], payload["rejected"]) == (1, 3)
    assert [(r["status"], r["errors"]) for r in payload["results"]] == [
        ("REJECTED", [{"field": ["events", "0", "idempotencyKey"], "code": "INVALID"}]),
        ("REJECTED", [{"field": ["events", "1", "consumerRef"], "code": "INVALID"}]),
        ("REJECTED", [{"field": ["events", "2", "metric"], "code": "INVALID"}]),
        ("ACCEPTED", []),
    ]
    assert await stored_keys(api, mobility.net.owner.key) == ["good"]


@pytest.mark.parametrize("text", BIDI.values(), ids=BIDI.keys())
async def test_a_consumer_reference_is_its_name_and_holds_no_bidirectional_control(client, api, mobility, text):
    body = await post(client, RECORD, {"events": [event(mobility.service_id, "spoof", consumerRef=text)]}, mobility.citycar.key)
    assert [r["errors"] for r in body["data"]["recordUsage"]["results"]] == [[{"field": ["events", "0", "consumerRef"], "code": "INVALID"}]]


@pytest.mark.parametrize("text", MALFORMED.values(), ids=MALFORMED.keys())
async def test_malformed_text_as_the_key_to_void_is_invalid(client, api, mobility, text):
    body = await post(client, "mutation($k: String!) { voidUsage(idempotencyKey: $k) { event { id } errors { field code } } }",
                      {"k": text}, mobility.citycar.key)
    assert payload_errors(body, "voidUsage") == [(["idempotencyKey"], "INVALID")]


@pytest.mark.parametrize("text", {**MALFORMED, **BIDI}.values(), ids={**MALFORMED, **BIDI}.keys())
async def test_malformed_text_as_a_partners_name_or_reference_is_invalid_and_onboards_nobody(client, api, mobility, text):
    owner = mobility.net.owner.key
    before = await parties(api, owner)
    bad_name = await post(client, ONBOARD, {"input": {"name": text, "kind": "PARTNER", "externalRef": "crm-1"}}, owner)
    assert payload_errors(bad_name, "onboardPartner") == [(["input", "name"], "INVALID")]
    if text not in BIDI.values():  # a reference is no name: the bidirectional controls are the name's rule
        bad_ref = await post(client, ONBOARD, {"input": {"name": "Fine", "kind": "PARTNER", "externalRef": text}}, owner)
        assert payload_errors(bad_ref, "onboardPartner") == [(["input", "externalRef"], "INVALID")]
    assert await parties(api, owner) == before


async def parties(api, key: str) -> list[str]:
    data = await api.data("{ network { parties(first: 100) { edges { node { name } } } } }", key=key)
    return [edge["node"]["name"] for edge in data["network"]["parties"]["edges"]]


@pytest.mark.parametrize("text", {**MALFORMED, **BIDI}.values(), ids={**MALFORMED, **BIDI}.keys())
async def test_malformed_text_as_a_services_name_is_invalid(client, mobility, text):
    body = await post(client, CREATE_SERVICE, {"input": {"name": text, "providerId": mobility.citycar.id, "charges": CAR_SHARING_CHARGES}},
                      mobility.net.owner.key)
    assert payload_errors(body, "createService") == [(["input", "name"], "INVALID")]


@pytest.mark.parametrize("field", ["name", "ownerName", "currency", "timeZone", "firstPeriod"])
async def test_malformed_text_in_a_new_network_is_invalid_with_its_path(client, field):
    values = {"name": "Fine", "currency": "EUR", "ownerName": "Owner", field: "E\ud800"}
    body = await post(client, CREATE_NETWORK, {"input": values}, OPERATOR_KEY)
    assert payload_errors(body, "createNetwork") == [(["input", field], "INVALID")]


async def test_malformed_text_in_query_arguments_answers_its_code_with_its_path(client, mobility):
    owner = mobility.net.owner.key
    period = "query($p: String!) { revenueFlows(period: $p) { amount { amount } } }"
    quote = "query($s: ID!, $m: String!) { quote(serviceId: $s, usage: [{metric: $m, quantity: \"1\"}]) { total { amount } } }"
    statement = "query($id: ID!, $c: String) { statement(partyId: $id, period: \"2026-01\", currency: $c) { id } }"
    answers = [
        await post(client, period, {"p": "2026-1\x00"}, owner),
        await post(client, quote, {"s": mobility.service_id, "m": "minutes\ud800"}, owner),
        await post(client, statement, {"id": mobility.net.owner.id, "c": "EU\x85"}, owner),
    ]
    assert [(a["errors"][0]["extensions"]["code"], a["errors"][0]["extensions"]["field"]) for a in answers] == [
        ("INVALID", ["period"]), ("INVALID", ["usage", "0", "metric"]), ("INVALID", ["currency"]),
    ]


async def test_malformed_ids_and_cursors_answer_as_any_unknown_one(client, mobility):
    owner = mobility.net.owner.key
    party = await post(client, "query($id: ID!) { party(id: $id) { name } }", {"id": "UGFy\ud800dHk6MQ=="}, owner)
    node = await post(client, "query($id: ID!) { node(id: $id) { id } }", {"id": "\x00"}, owner)
    page = await post(client, "query($a: String) { network { parties(after: $a) { edges { cursor } } } }", {"a": "Y3Vy\ud800"}, owner)
    assert [(b["errors"][0]["extensions"]["code"], b["errors"][0]["extensions"]["field"]) for b in (party, node, page)] == [
        ("NOT_FOUND", ["id"]), ("NOT_FOUND", ["id"]), ("INVALID_CURSOR", ["after"]),
    ]


async def test_text_that_passes_is_stored_as_sent(client, api, mobility):
    """Nothing is normalised: decomposed accents, joined emoji and a right-to-left script stay as
    sent (only a name's surrounding whitespace is trimmed); a key may hold a bidirectional
    control, which only names refuse."""
    owner = mobility.net.owner.key
    name = "Cafe\u0301 \U0001f469\u200d\U0001f4bb \u05e9\u05dc\u05d5\u05dd"
    body = await post(client, ONBOARD, {"input": {"name": f"  {name} ", "kind": "PARTNER", "externalRef": "ref\u00a0\u2028"}}, owner)
    assert payload_errors(body, "onboardPartner") == []
    assert body["data"]["onboardPartner"]["party"]["name"] == name
    key = "key\u202e\u0301"
    recorded = await post(client, RECORD, {"events": [event(mobility.service_id, key, consumerRef=name)]}, mobility.citycar.key)
    assert recorded["data"]["recordUsage"]["results"][0]["event"]["consumer"] == {"name": name}
    assert await stored_keys(api, owner) == [key]


async def test_malformed_text_on_an_ndjson_line_is_invalid_and_the_stream_ends_with_its_summary(client, api, mobility):
    sid = mobility.service_id
    content = b"".join([
        json.dumps(event(sid, "nd\ud800")).encode() + b"\n",
        # A surrogate written in UTF-8's form (CESU-8), which no UTF-8 decoder takes.
        json.dumps(event(sid, "cesu")).replace("alice", "al\\u00e9").encode().replace(b"\\u00e9", b"\xed\xa0\x80") + b"\n",
        json.dumps(event(sid, "nd-ok")).encode() + b"\n",
        json.dumps(event(sid, "nd-c1", metric="min\x85utes")).encode() + b"\n",
    ])
    response = await client.post("/usage.ndjson", content=content, headers={"Authorization": f"Bearer {mobility.citycar.key}"})
    assert response.status_code == 200, response.text
    *results, summary = [json.loads(line) for line in response.text.splitlines()]
    assert summary == {"accepted": 1, "duplicates": 0, "rejected": 3}
    assert [(r["status"], [(e["field"], e["code"]) for e in r["errors"]]) for r in results] == [
        ("REJECTED", [(["events", "0", "idempotencyKey"], "INVALID")]),
        ("REJECTED", [(["events", "1", "consumerRef"], "INVALID")]),
        ("ACCEPTED", []),
        ("REJECTED", [(["events", "3", "metric"], "INVALID")]),
    ]
    assert await stored_keys(api, mobility.net.owner.key) == ["nd-ok"]

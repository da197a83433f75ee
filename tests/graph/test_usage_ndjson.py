"""POST /usage.ndjson: recordUsage's semantics with one event per line, answered line by line."""

import json

from tests.graph.test_limits import app_with, bearer, client_of
from graph.ids import to_global_id
from tests.graph.test_record_usage import EVENTS, bike_rental, event, revenue


def body(events) -> bytes:
    return "".join(json.dumps(e) + "\n" for e in events).encode()


async def send(client, key, events_or_body, headers=None):
    content = events_or_body if isinstance(events_or_body, bytes) else body(events_or_body)
    return await client.post("/usage.ndjson", content=content, headers={**(bearer(key) if key else {}), **(headers or {})})


def lines(response) -> tuple[list[dict], dict]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    out = [json.loads(line) for line in response.text.splitlines()]
    return out[:-1], out[-1]


async def test_events_are_accepted_and_a_resend_answers_duplicates(client, api, mobility):
    sid = mobility.service_id
    events = [event(sid, "n1"), event(sid, "n2", metric="rental", quantity="1")]
    results, summary = lines(await send(client, mobility.citycar.key, events))
    assert summary == {"accepted": 2, "duplicates": 0, "rejected": 0}
    assert [(r["index"], r["status"], r["errors"]) for r in results] == [(0, "ACCEPTED", []), (1, "ACCEPTED", [])]
    assert all(r["eventId"] for r in results)
    assert await revenue(api, mobility) == "9.70"
    again, summary = lines(await send(client, mobility.citycar.key, events))
    assert summary == {"accepted": 0, "duplicates": 2, "rejected": 0}
    assert [r["eventId"] for r in again] == [r["eventId"] for r in results]
    assert await revenue(api, mobility) == "9.70"


async def test_a_bad_line_is_rejected_with_its_path_and_the_rest_is_written(client, api, mobility):
    sid = mobility.service_id
    content = (
        json.dumps(event(sid, "good")) + "\n\n"
        + json.dumps(event(sid, "neg", quantity="-1")) + "\n"
        + "{not json\n"
        + json.dumps(event(sid, "good", quantity="31")) + "\n"
    ).encode()
    results, summary = lines(await send(client, mobility.citycar.key, content))
    assert summary == {"accepted": 1, "duplicates": 0, "rejected": 3}
    assert [r["status"] for r in results] == ["ACCEPTED", "REJECTED", "REJECTED", "REJECTED"]
    assert [{"field": e["field"], "code": e["code"]} for e in results[1]["errors"]] == [{"field": ["events", "1", "quantity"], "code": "INVALID"}]
    assert results[2]["errors"][0]["field"] == ["events", "2"] and results[2]["errors"][0]["code"] == "INVALID"
    assert [e["code"] for e in results[3]["errors"]] == ["IDEMPOTENCY_CONFLICT"]
    assert results[3]["errors"][0]["field"] == ["events", "3", "idempotencyKey"]
    keys = [e["node"]["idempotencyKey"] for e in (await api.data(EVENTS, key=mobility.net.owner.key))["usageEvents"]["edges"]]
    assert keys == ["good"]
    assert await revenue(api, mobility) == "8.70"


async def test_the_index_counts_the_whole_body_across_batches(client, mobility, monkeypatch):
    from app.server import usage_ndjson

    monkeypatch.setattr(usage_ndjson, "BATCH", 2)
    sid = mobility.service_id
    events = [event(sid, f"b{i}") for i in range(4)] + [event(sid, "b-bad", consumerRef="")]
    results, summary = lines(await send(client, mobility.citycar.key, events))
    assert summary == {"accepted": 4, "duplicates": 0, "rejected": 1}
    assert [r["index"] for r in results] == [0, 1, 2, 3, 4]
    assert results[4]["errors"][0]["field"] == ["events", "4", "consumerRef"]


async def test_without_a_key_or_with_a_wrong_one_nothing_is_written(client, api, mobility):
    sid = mobility.service_id
    for key in (None, "sf_wrong_key_0123456789abcdef"):
        response = await send(client, key, [event(sid, "anon")])
        assert response.status_code == 401
        assert response.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    assert await revenue(api, mobility) == "0.00"


async def test_a_partner_is_forbidden_and_another_network_finds_no_such_service(client, api, mobility):
    from tests.graph.conftest import new_network

    sid = mobility.service_id
    results, _ = lines(await send(client, mobility.helpdesk.key, [event(sid, "by-partner")]))
    assert [(e["field"], e["code"]) for e in results[0]["errors"]] == [(["events", "0", "serviceId"], "FORBIDDEN")]
    other = await new_network(api, "Other")
    results, summary = lines(await send(client, other.owner.key, [event(sid, "intruder")]))
    assert summary["rejected"] == 1
    assert [(e["field"], e["code"]) for e in results[0]["errors"]] == [(["events", "0", "serviceId"], "NOT_FOUND")]
    assert await revenue(api, mobility) == "0.00"


async def test_a_body_above_the_limit_is_refused_whole(rt, api, mobility):
    sid = mobility.service_id
    content = body([event(sid, f"big-{i}") for i in range(50)])
    async with client_of(app_with(rt, max_body_bytes=len(content) - 1)) as small:
        response = await send(small, mobility.citycar.key, content)
    assert response.status_code == 413
    assert response.json()["errors"][0]["extensions"]["code"] == "LIMIT_EXCEEDED"
    assert await revenue(api, mobility) == "0.00"


async def test_the_rate_limit_applies_per_key(rt, mobility):
    sid = mobility.service_id
    async with client_of(app_with(rt, rate_limit_per_minute=1)) as limited:
        first = await send(limited, mobility.citycar.key, [event(sid, "rl-1")])
        second = await send(limited, mobility.citycar.key, [event(sid, "rl-2")])
    assert first.status_code == 200
    assert second.status_code == 429
    assert second.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
    assert "retry-after" in second.headers


async def test_a_service_the_caller_cannot_see_answers_as_one_that_does_not_exist(client, api, mobility):
    """CityCar cannot see Bike rental: its line answers exactly as a forged service id's, and the
    service it can see but may not record on (HelpDesk24 on car sharing) stays FORBIDDEN."""
    _, bikes = await bike_rental(api, mobility)
    hidden, forged = await send(client, mobility.citycar.key, [event(bikes, "probe")]), await send(
        client, mobility.citycar.key, [event(to_global_id("Service", 10**12), "probe")])
    assert lines(hidden) == lines(forged)
    assert [e["code"] for e in lines(hidden)[0][0]["errors"]] == ["NOT_FOUND"]
    seen, _ = lines(await send(client, mobility.helpdesk.key, [event(mobility.service_id, "probe")]))
    assert [(e["field"], e["code"]) for e in seen[0]["errors"]] == [(["events", "0", "serviceId"], "FORBIDDEN")]
    assert (await api.data(EVENTS, key=mobility.net.owner.key))["usageEvents"]["edges"] == []

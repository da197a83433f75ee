"""Operations: /metrics for Prometheus and JSON logs that carry the request id."""

import contextlib
import io
import json
import logging
from datetime import UTC, datetime, timedelta

from prometheus_client.parser import text_string_to_metric_families

from app.observability import configure_logging
from tests.graph.test_close_period import close, october  # noqa: F401 (fixture)
from tests.graph.test_record_usage import event, record


@contextlib.contextmanager
def json_logs():
    """The process's logging as the server configures it, into a buffer, restored afterwards."""
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    configure_logging(stream=stream)
    try:
        yield stream
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


async def sample(client, name: str, **labels) -> float:
    text = (await client.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for metric in family.samples:
            if metric.name == name and all(metric.labels.get(k) == v for k, v in labels.items()):
                return metric.value
    return 0.0


async def test_metrics_count_operations_by_name_usage_outcomes_and_closes(api, client, october):
    before = await sample(client, "shareflow_graphql_operation_seconds_count", operation="me", type="query")
    accepted = await sample(client, "shareflow_usage_events_total", status="ACCEPTED")
    duplicates = await sample(client, "shareflow_usage_events_total", status="DUPLICATE")
    closes = await sample(client, "shareflow_period_closes_total")
    for _ in range(3):
        await api.data("{ me { party { id } } }", key=october.net.owner.key)
    await api.data("query Who { me { party { name } } }", key=october.net.owner.key)
    await record(api, october.citycar.key, [event(october.service_id, "new", occurredAt="2026-11-10T10:00:00+00:00"), event(october.service_id, "m", occurredAt="2026-10-20T10:00:00+00:00")])
    await close(api, october.net.owner.key, "2026-10")
    assert await sample(client, "shareflow_graphql_operation_seconds_count", operation="me", type="query") == before + 3
    assert await sample(client, "shareflow_graphql_operation_seconds_count", operation="Who", type="query") >= 1
    assert await sample(client, "shareflow_usage_events_total", status="ACCEPTED") == accepted + 1
    assert await sample(client, "shareflow_usage_events_total", status="DUPLICATE") == duplicates + 1
    assert await sample(client, "shareflow_period_closes_total") == closes + 1
    assert (await client.get("/metrics")).headers["content-type"].startswith("text/plain")


async def test_every_response_names_its_request_and_the_logs_carry_it(client, network):
    with json_logs() as stream:
        response = await client.post(
            "/graphql",
            json={"query": "{ me { party { name } } }"},
            headers={"Authorization": f"Bearer {network.owner.key}"},
        )
        request_id = response.headers["x-request-id"]
        logging.getLogger("shareflow.test").warning("something happened")  # outside any request
    assert len(request_id) == 32
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["message"] == "something happened" and line["levelname"] == "WARNING" and "request_id" in line
    logged_at = datetime.fromisoformat(line["timestamp"])
    assert logged_at.utcoffset() == timedelta(0) and abs(datetime.now(UTC) - logged_at) < timedelta(minutes=1)


async def test_an_internal_error_is_logged_as_json_with_the_request_id_the_client_got(client, network, monkeypatch):
    from app.services import quotes

    async def broken(*args, **kwargs):
        raise RuntimeError("database exploded: SELECT secret FROM somewhere")

    monkeypatch.setattr(quotes, "quote", broken)
    with json_logs() as stream:
        response = await client.post(
            "/graphql",
            json={"query": 'query { quote(serviceId: "U2VydmljZTox", usage: []) { total { amount } } }'},
            headers={"Authorization": f"Bearer {network.owner.key}"},
        )
    error = response.json()["errors"][0]
    assert error["message"] == "Unexpected error." and "SELECT" not in response.text
    logged = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert any(entry["request_id"] == error["extensions"]["requestId"] == response.headers["x-request-id"] for entry in logged)

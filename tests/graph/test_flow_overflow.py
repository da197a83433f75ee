"""Bounded inputs can still multiply past 64 bits (10^12 per unit over enough units). A leg, pool or
retained amount beyond 2^62 minor units is FLOW_OVERFLOW wherever it would show, naming the
agreement to end, never INTERNAL: closePeriod refuses and the period stays open, until its payer
or the owner ends that agreement at the blocked period; then the period closes."""

import json
import logging
from datetime import UTC, datetime

import pytest

from graph.ids import split_global_id, to_global_id
from tests.graph.conftest import CAR_SHARING_CHARGES, new_network
from tests.graph.test_close_period import PERIODS
from tests.graph.test_end_agreement import END_AGREEMENT
from tests.graph.test_quote import QUOTE
from tests.graph.test_record_usage import event, record
from tests.graph.test_statement import STATEMENT
from tests.graph.test_subscriptions import PROTOCOLS, UPDATED, GraphQLSocket, error_code, totals, ws_url  # noqa: F401 - the fixture

NOW = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)
OCTOBER = "2026-10-20T10:00:00+00:00"
CLOSE = """mutation($p: String!) { closePeriod(period: $p) { period { key status } statementCount errors { field code message } } }"""
FLOWS = """query($p: String!) { revenueFlows(period: $p) { payer { name } payee { name } amount { amount } } }"""
HUGE_LEG = {"kind": "PER_UNIT", "amount": "1000000000000", "metric": "minutes"}
"10^12 EUR a minute: 100,000 minutes make 10^19 cents, past 2^63 (that answered INTERNAL before)."


@pytest.fixture
async def blocked(api, rt):
    """On 2026-11-15, a network since 2026-09 (closed, empty) whose owner pays ParkSpace HUGE_LEG
    from 2026-09 on and CityCar 85%, with 100,000 minutes of car sharing in October."""
    rt.clock = lambda: NOW
    net = await new_network(api, "Mobility", firstPeriod="2026-09")
    citycar = await net.onboard("CityCar", "PROVIDER")
    parkspace = await net.onboard("ParkSpace")
    service_id = await net.service("Car sharing", citycar, CAR_SHARING_CHARGES)
    huge = await net.agree(net.owner, parkspace, service_id, HUGE_LEG, effectiveFrom="2026-09")
    fair = await net.agree(net.owner, citycar, service_id, {"kind": "PERCENT", "percent": "85"}, effectiveFrom="2026-09")
    assert huge["errors"] == fair["errors"] == []
    assert (await api.data(CLOSE, {"p": "2026-09"}, net.owner.key))["closePeriod"]["errors"] == []
    payload = await record(api, citycar.key, [event(service_id, "big", quantity="100000", occurredAt=OCTOBER)])
    assert payload["accepted"] == 1
    return net, service_id, huge["agreement"]["id"]


async def test_a_leg_past_two_to_the_62_blocks_the_close_until_its_agreement_is_ended_at_that_period(api, blocked):
    net, _, agreement_id = blocked
    payload = (await api.data(CLOSE, {"p": "2026-10"}, net.owner.key))["closePeriod"]
    assert payload["period"] is None and payload["statementCount"] == 0
    assert [(e["field"], e["code"]) for e in payload["errors"]] == [(["period"], "FLOW_OVERFLOW")]
    assert agreement_id in payload["errors"][0]["message"]
    periods = (await api.data(PERIODS, key=net.owner.key))["network"]["periods"]
    assert {"key": "2026-10", "status": "OPEN"} in periods

    ended = (await api.data(END_AGREEMENT, {"input": {"agreementId": agreement_id, "effectiveTo": "2026-10"}}, net.owner.key))
    assert ended["endAgreement"]["errors"] == []
    payload = (await api.data(CLOSE, {"p": "2026-10"}, net.owner.key))["closePeriod"]
    assert payload["errors"] == [] and payload["period"] == {"key": "2026-10", "status": "CLOSED"}
    flows = (await api.data(FLOWS, {"p": "2026-10"}, net.owner.key))["revenueFlows"]
    assert [(f["payee"]["name"], f["amount"]["amount"]) for f in flows] == [("CityCar", "24650.00")]


async def test_the_live_figures_of_the_blocked_period_answer_flow_overflow_not_internal(api, client, blocked):
    net, service_id, agreement_id = blocked
    draft = to_global_id("Statement", f"{split_global_id(net.owner.id)[1]}:2026-10:EUR")
    download = await client.get(f"/statements/{draft}.csv", headers={"Authorization": f"Bearer {net.owner.key}"})
    assert download.status_code == 422 and download.json()["errors"][0]["extensions"]["code"] == "FLOW_OVERFLOW"
    assert agreement_id in download.json()["errors"][0]["message"]
    for query, variables in [
        (FLOWS, {"p": "2026-10"}),
        (STATEMENT, {"party": net.owner.id, "period": "2026-10"}),
        (QUOTE, {"id": service_id, "usage": [{"metric": "minutes", "quantity": "100000"}], "period": "2026-10"}),
    ]:
        body = await api.post(query, variables, net.owner.key)
        assert [e["extensions"]["code"] for e in body["errors"]] == ["FLOW_OVERFLOW"], query
        assert agreement_id in body["errors"][0]["message"]


async def test_a_late_event_whose_correction_would_overflow_is_rejected_alone(api, rt, blocked):
    net, service_id, agreement_id = blocked
    await api.data(END_AGREEMENT, {"input": {"agreementId": agreement_id, "effectiveTo": "2026-10"}}, net.owner.key)
    assert (await api.data(CLOSE, {"p": "2026-10"}, net.owner.key))["closePeriod"]["errors"] == []
    september = "2026-09-20T10:00:00+00:00"  # closed, the huge leg in force
    citycar = net.members["CityCar"]
    payload = await record(api, citycar.key, [event(service_id, "late", quantity="100000", occurredAt=september),
                                              event(service_id, "now", quantity="1", occurredAt="2026-11-10T10:00:00+00:00")])
    assert [r["status"] for r in payload["results"]] == ["REJECTED", "ACCEPTED"]
    assert payload["results"][0]["errors"] == [{"field": ["events", "0", "quantity"], "code": "FLOW_OVERFLOW"}]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_subscription_whose_totals_overflow_ends_with_flow_overflow_not_internal(api, ws_url, protocol, caplog):
    net = await new_network(api, "Live")
    citycar = await net.onboard("CityCar", "PROVIDER")
    parkspace = await net.onboard("ParkSpace")
    service_id = await net.service("Car sharing", citycar, CAR_SHARING_CHARGES)
    huge = await net.agree(net.owner, parkspace, service_id, HUGE_LEG)
    async with GraphQLSocket.open(ws_url, protocol, f"Bearer {net.owner.key}") as ws:
        op = await ws.subscribe(UPDATED)
        assert totals(await ws.next(op)) == ("0.00", "0.00", "0.00")
        await record(api, citycar.key, [event(service_id, "big", quantity="100000")])
        refused = await ws.next(op)
        assert error_code(refused) == "FLOW_OVERFLOW"
        assert huge["agreement"]["id"] in json.dumps(refused)
    # A refusal, not the server's fault: nothing logged at ERROR, no traceback.
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR or record.exc_info]

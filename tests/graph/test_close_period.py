from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tests.graph.conftest import mobility_network
from tests.graph.test_record_usage import event, record
from tests.graph.test_statement import STATEMENT, lines

CLOSE = """mutation($p: String!) { closePeriod(period: $p) { period { key status } statementCount errors { field code } } }"""
STATEMENTS = """
query($p: String!, $first: Int, $after: String, $party: ID) {
  statements(period: $p, first: $first, after: $after, partyId: $party) {
    edges { node { id number status party { name } net { amount } } }
    pageInfo { hasNextPage endCursor }
  }
}"""
PERIODS = "{ network { periods { key status } } }"
OCTOBER = "2026-10-20T10:00:00+00:00"
NOW = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)


@pytest.fixture
async def october(api, rt):
    """On 2026-11-15, the worked example in a network that began in October, with one October rental."""
    rt.clock = lambda: NOW
    mobility = await mobility_network(api, first_period="2026-10")
    sid = mobility.service_id
    await record(api, mobility.citycar.key, [event(sid, "m", occurredAt=OCTOBER), event(sid, "r", metric="rental", quantity="1", occurredAt=OCTOBER)])
    return mobility


async def close(api, key, period):
    return (await api.data(CLOSE, {"p": period}, key))["closePeriod"]


async def all_statements(api, key, period, party=None) -> list[dict]:
    nodes, after = [], None
    while True:
        page = (await api.data(STATEMENTS, {"p": period, "first": 3, "after": after, "party": party}, key))["statements"]
        nodes += [edge["node"] for edge in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            return nodes
        after = page["pageInfo"]["endCursor"]


async def test_closing_issues_one_final_statement_per_party_numbered_without_gaps(api, october):
    owner = october.net.owner
    draft = (await api.data(STATEMENT, {"party": owner.id, "period": "2026-10"}, owner.key))["statement"]
    payload = await close(api, owner.key, "2026-10")
    assert payload == {"period": {"key": "2026-10", "status": "CLOSED"}, "statementCount": 7, "errors": []}
    finals = await all_statements(api, owner.key, "2026-10")
    assert [s["number"] for s in finals] == [f"ST-2026-10-{n:06d}" for n in range(1, 8)]
    assert {s["status"] for s in finals} == {"FINAL"}
    assert sum(Decimal(s["net"]["amount"]) for s in finals) == 0
    final = (await api.data(STATEMENT, {"party": owner.id, "period": "2026-10"}, owner.key))["statement"]
    assert final["id"] == draft["id"] and final["status"] == "FINAL" and final["number"].startswith("ST-2026-10-")
    assert lines(final) == lines(draft)
    assert (final["receivable"]["amount"], final["payable"]["amount"], final["net"]["amount"]) == ("9.70", "9.04", "0.66")
    periods = (await api.data(PERIODS, key=owner.key))["network"]["periods"]
    assert periods == [{"key": "2026-10", "status": "CLOSED"}, {"key": "2026-11", "status": "OPEN"}]


async def test_a_partner_pages_only_through_its_own_final_statement(api, october):
    await close(api, october.net.owner.key, "2026-10")
    mine = await all_statements(api, october.helpdesk.key, "2026-10")
    assert [(s["party"]["name"], s["net"]["amount"]) for s in mine] == [("HelpDesk24", "0.11")]
    assert await all_statements(api, october.helpdesk.key, "2026-10", party=october.citycar.id) == []


async def test_a_consumers_final_invoice_keeps_its_charge_lines(api, october):
    await close(api, october.net.owner.key, "2026-10")
    parties = (await api.data("{ network { parties(kind: CONSUMER) { edges { node { id } } } } }", key=october.net.owner.key))
    alice = parties["network"]["parties"]["edges"][0]["node"]["id"]
    invoice = (await api.data(STATEMENT, {"party": alice, "period": "2026-10"}, october.citycar.key))["statement"]
    assert invoice["status"] == "FINAL" and invoice["net"]["amount"] == "-9.70"
    assert [(c["metric"], c["quantity"], c["amount"]["amount"]) for c in invoice["charges"]] == [("minutes", "30", "8.70"), ("rental", "1", "1.00")]


@pytest.mark.parametrize(
    ("period", "code"),
    [("2026-11", "PERIOD_NOT_OLDEST"), ("2026-09", "BEFORE_FIRST_PERIOD"), ("2026-1", "INVALID_PERIOD")],
)
async def test_only_the_oldest_ended_open_period_can_close(api, october, period, code):
    payload = await close(api, october.net.owner.key, period)
    assert payload["errors"] == [{"field": ["period"], "code": code}] and payload["statementCount"] == 0
    assert await all_statements(api, october.net.owner.key, "2026-10") == []


async def test_a_month_that_has_not_ended_stays_open(api, october):
    await close(api, october.net.owner.key, "2026-10")
    payload = await close(api, october.net.owner.key, "2026-11")
    assert payload["errors"] == [{"field": ["period"], "code": "PERIOD_NOT_ENDED"}]
    assert await all_statements(api, october.net.owner.key, "2026-11") == []


async def test_a_period_closes_once(api, october):
    await close(api, october.net.owner.key, "2026-10")
    again = await close(api, october.net.owner.key, "2026-10")
    assert again["errors"] == [{"field": ["period"], "code": "PERIOD_CLOSED"}]
    assert len(await all_statements(api, october.net.owner.key, "2026-10")) == 7


async def test_only_the_owner_closes(api, october):
    assert await api.error_code(CLOSE, {"p": "2026-10"}, october.citycar.key) == "FORBIDDEN"
    assert await all_statements(api, october.net.owner.key, "2026-10") == []

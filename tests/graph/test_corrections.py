"""Late events and voids after a close: the closed period stays as it was, the difference of
every flow is booked into the oldest open period as signed adjustments."""

from tests.graph.test_close_period import OCTOBER, all_statements, close, october  # noqa: F401 (fixture)
from tests.graph.test_record_usage import event, record
from tests.graph.test_statement import STATEMENT, lines

FLOWS = """
query($p: String!) {
  revenueFlows(period: $p) { payer { name } payee { name } amount { amount } adjustment originPeriod }
}"""
VOID = """mutation($key: String!) { voidUsage(idempotencyKey: $key) { event { voided } errors { field code } } }"""


def adjustment_lines(statement) -> list[tuple]:
    return [
        (l["direction"], l["counterparty"]["name"] if l["counterparty"] else None, l["amount"]["amount"], l["originPeriod"])
        for l in statement["lines"]
        if l["adjustment"]
    ]


async def flows(api, key, period) -> list[tuple]:
    found = (await api.data(FLOWS, {"p": period}, key))["revenueFlows"]
    return sorted((f["payer"]["name"], f["payee"]["name"], f["amount"]["amount"], f["adjustment"], f["originPeriod"]) for f in found)


async def test_a_late_rental_leaves_the_closed_period_and_is_booked_into_the_next(api, october):
    owner = october.net.owner
    await close(api, owner.key, "2026-10")
    october_final = (await api.data(STATEMENT, {"party": owner.id, "period": "2026-10"}, owner.key))["statement"]
    october_flows = await flows(api, owner.key, "2026-10")
    sid = october.service_id
    late = await record(api, october.citycar.key, [event(sid, "late-m", occurredAt=OCTOBER), event(sid, "late-r", metric="rental", quantity="1", occurredAt=OCTOBER)])
    assert late["accepted"] == 2
    assert (await api.data(STATEMENT, {"party": owner.id, "period": "2026-10"}, owner.key))["statement"] == october_final
    assert await flows(api, owner.key, "2026-10") == october_flows
    november = (await api.data(STATEMENT, {"party": owner.id, "period": "2026-11"}, owner.key))["statement"]
    assert adjustment_lines(november) == [
        ("IN", None, "9.70", "2026-10"),
        ("OUT", "HelpDesk24", "0.20", "2026-10"),
        ("OUT", "ParkSpace", "0.60", "2026-10"),
        ("OUT", "CityCar", "8.24", "2026-10"),
    ]
    assert november["net"]["amount"] == "0.66"
    assert ("CityCar", "FleetCare", "0.50", True, "2026-10") in await flows(api, owner.key, "2026-11")


async def test_a_void_after_close_books_negative_adjustments_down_the_chain(api, october):
    await close(api, october.net.owner.key, "2026-10")
    payload = (await api.data(VOID, {"key": "r"}, october.citycar.key))["voidUsage"]
    assert payload["errors"] == []
    citycar = (await api.data(STATEMENT, {"party": october.citycar.id, "period": "2026-11"}, october.citycar.key))["statement"]
    assert adjustment_lines(citycar) == [("IN", "Mobility owner", "-0.85", "2026-10"), ("OUT", "FleetCare", "-0.50", "2026-10")]
    assert citycar["net"]["amount"] == "-0.35"
    fleetcare = (await api.data(STATEMENT, {"party": october.fleetcare.id, "period": "2026-11"}, october.fleetcare.key))["statement"]
    assert lines(fleetcare) == [("IN", "CityCar", "-0.50")]


async def test_corrections_of_a_corrected_period_book_only_what_is_still_owed(api, october):
    owner = october.net.owner
    await close(api, owner.key, "2026-10")
    sid = october.service_id
    await record(api, october.citycar.key, [event(sid, "late", occurredAt=OCTOBER)])
    await api.data(VOID, {"key": "late"}, october.citycar.key)
    await record(api, october.citycar.key, [event(sid, "later", occurredAt=OCTOBER, quantity="10")])
    november = (await api.data(STATEMENT, {"party": october.helpdesk.id, "period": "2026-11"}, october.helpdesk.key))["statement"]
    # October now holds 40 minutes and one rental: 12.60, of which 2% is 0.25; 0.19 was booked at the close.
    received = [l["amount"]["amount"] for l in november["lines"] if l["direction"] == "IN"]
    assert received == ["0.06"]


async def test_closing_the_next_period_freezes_its_adjustments_and_the_books_balance(api, october, rt):
    from datetime import UTC, datetime
    from decimal import Decimal

    owner = october.net.owner
    await close(api, owner.key, "2026-10")
    await record(api, october.citycar.key, [event(october.service_id, "late", occurredAt=OCTOBER)])
    rt.clock = lambda: datetime(2026, 12, 2, tzinfo=UTC)
    payload = await close(api, owner.key, "2026-11")
    assert payload["errors"] == [] and payload["statementCount"] > 0
    finals = await all_statements(api, owner.key, "2026-11")
    assert [s["number"] for s in finals] == [f"ST-2026-11-{n:06d}" for n in range(1, len(finals) + 1)]
    assert sum(Decimal(s["net"]["amount"]) for s in finals) == 0
    final = (await api.data(STATEMENT, {"party": owner.id, "period": "2026-11"}, owner.key))["statement"]
    assert final["status"] == "FINAL" and adjustment_lines(final)[0] == ("IN", None, "8.70", "2026-10")

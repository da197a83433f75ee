import csv
import io

from tests.graph.test_close_period import close, october  # noqa: F401 (fixture)
from tests.graph.test_statement import STATEMENT


async def download(client, statement_id: str, key: str | None):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return await client.get(f"/statements/{statement_id}.csv", headers=headers)


async def test_a_final_statement_downloads_as_csv_with_its_lines_and_totals(api, client, october):
    owner = october.net.owner
    await close(api, owner.key, "2026-10")
    statement = (await api.data(STATEMENT, {"party": owner.id, "period": "2026-10"}, owner.key))["statement"]
    response = await download(client, statement["id"], owner.key)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert {r["number"] for r in rows} == {statement["number"]}
    assert [(r["kind"], r["counterparty"], r["direction"], r["amount"]) for r in rows] == [
        ("LINE", "consumers", "IN", "9.70"),
        ("LINE", "HelpDesk24", "OUT", "0.19"),
        ("LINE", "ParkSpace", "OUT", "0.60"),
        ("LINE", "CityCar", "OUT", "8.25"),
        ("RECEIVABLE", "", "", "9.70"),
        ("PAYABLE", "", "", "9.04"),
        ("NET", "", "", "0.66"),
    ]


async def test_a_draft_downloads_too_and_a_consumer_invoice_carries_its_charges(api, client, october):
    parties = await api.data("{ network { parties(kind: CONSUMER) { edges { node { id } } } } }", key=october.net.owner.key)
    alice = parties["network"]["parties"]["edges"][0]["node"]["id"]
    invoice = (await api.data(STATEMENT, {"party": alice, "period": "2026-10"}, october.citycar.key))["statement"]
    rows = list(csv.DictReader(io.StringIO((await download(client, invoice["id"], october.citycar.key)).text)))
    assert [(r["kind"], r["metric"], r["quantity"], r["amount"]) for r in rows if r["kind"] == "CHARGE"] == [
        ("CHARGE", "minutes", "30", "8.70"),
        ("CHARGE", "rental", "1", "1.00"),
    ]
    assert rows[0]["status"] == "DRAFT"


async def test_the_csv_is_refused_without_a_key_and_hidden_from_other_parties(api, client, october):
    owner = october.net.owner
    statement = (await api.data(STATEMENT, {"party": owner.id, "period": "2026-10"}, owner.key))["statement"]
    assert (await download(client, statement["id"], None)).status_code == 401
    hidden = await download(client, statement["id"], october.helpdesk.key)
    assert hidden.status_code == 404 and "9.70" not in hidden.text
    assert (await download(client, "bm90LWFuLWlk", owner.key)).status_code == 404

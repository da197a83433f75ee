from tests.graph.test_record_usage import event, record

STATEMENT = """
query($party: ID!, $period: String!, $currency: String) {
  statement(partyId: $party, period: $period, currency: $currency) {
    id number status period currency
    party { name }
    receivable { amount } payable { amount } net { amount }
    lines { counterparty { name } service { name } direction amount { amount currency } adjustment originPeriod }
    charges { metric quantity events amount { amount } }
  }
}"""
CONSUMER = """{ network { parties(kind: CONSUMER) { edges { node { id name } } } } }"""


async def rental(api, mobility) -> str:
    """One 30-minute rental by alice; returns its period."""
    sid = mobility.service_id
    minutes = event(sid, "m")
    await record(api, mobility.citycar.key, [minutes, event(sid, "r", metric="rental", quantity="1", occurredAt=minutes["occurredAt"])])
    return minutes["occurredAt"][:7]


async def statement(api, key, party_id, period, currency=None):
    return (await api.data(STATEMENT, {"party": party_id, "period": period, "currency": currency}, key))["statement"]


def lines(stmt) -> list[tuple]:
    return [
        (l["direction"], l["counterparty"]["name"] if l["counterparty"] else None, l["amount"]["amount"])
        for l in stmt["lines"]
    ]


async def test_the_owners_draft_shows_the_consumers_payments_and_every_share_it_pays(api, mobility):
    period = await rental(api, mobility)
    owner = await statement(api, mobility.net.owner.key, mobility.net.owner.id, period)
    assert (owner["status"], owner["number"], owner["currency"]) == ("DRAFT", None, "EUR")
    assert lines(owner) == [("IN", None, "9.70"), ("OUT", "HelpDesk24", "0.19"), ("OUT", "ParkSpace", "0.60"), ("OUT", "CityCar", "8.25")]
    assert (owner["receivable"]["amount"], owner["payable"]["amount"], owner["net"]["amount"]) == ("9.70", "9.04", "0.66")
    assert owner["charges"] == []


async def test_a_partner_sees_its_own_draft_and_not_another_partners(api, mobility):
    period = await rental(api, mobility)
    own = await statement(api, mobility.helpdesk.key, mobility.helpdesk.id, period)
    assert lines(own) == [("IN", "Mobility owner", "0.19"), ("OUT", "CallCenter Nord", "0.08")]
    assert own["net"]["amount"] == "0.11"
    assert await statement(api, mobility.parkspace.key, mobility.helpdesk.id, period) is None


async def test_a_consumers_invoice_lists_its_charge_lines_for_those_who_may_see_it(api, mobility):
    period = await rental(api, mobility)
    [alice] = (await api.data(CONSUMER, key=mobility.net.owner.key))["network"]["parties"]["edges"]
    invoice = await statement(api, mobility.citycar.key, alice["node"]["id"], period)
    assert invoice["charges"] == [
        {"metric": "minutes", "quantity": "30", "events": 1, "amount": {"amount": "8.70"}},
        {"metric": "rental", "quantity": "1", "events": 1, "amount": {"amount": "1.00"}},
    ]
    assert lines(invoice) == [("OUT", "Mobility owner", "9.70")]
    assert invoice["net"]["amount"] == "-9.70"
    assert await statement(api, mobility.helpdesk.key, alice["node"]["id"], period) is None


async def test_all_statements_of_a_period_sum_to_zero(api, mobility):
    period = await rental(api, mobility)
    [alice] = (await api.data(CONSUMER, key=mobility.net.owner.key))["network"]["parties"]["edges"]
    members = [mobility.net.owner, mobility.citycar, mobility.fleetcare, mobility.parkspace, mobility.helpdesk, mobility.callcenter]
    ids = [m.id for m in members] + [alice["node"]["id"]]
    nets = [(await statement(api, mobility.net.owner.key, party, period))["net"]["amount"] for party in ids]
    from decimal import Decimal

    assert sum(Decimal(n) for n in nets) == 0


async def test_the_same_id_names_the_statement_of_a_party_period_and_currency(api, mobility):
    period = await rental(api, mobility)
    first = await statement(api, mobility.net.owner.key, mobility.citycar.id, period)
    await record(api, mobility.citycar.key, [event(mobility.service_id, "m2")])
    second = await statement(api, mobility.citycar.key, mobility.citycar.id, period)
    assert first["id"] == second["id"]
    assert first["net"] != second["net"]


async def test_bad_arguments_are_refused_and_strangers_see_nothing(api, mobility):
    from tests.graph.conftest import new_network

    period = await rental(api, mobility)
    owner = mobility.net.owner
    body = await api.post(STATEMENT, {"party": owner.id, "period": "2026-13"}, owner.key)
    assert body["errors"][0]["extensions"]["code"] == "INVALID_PERIOD"
    body = await api.post(STATEMENT, {"party": owner.id, "period": period, "currency": "XXXX"}, owner.key)
    assert body["errors"][0]["extensions"]["code"] == "INVALID_CURRENCY"
    other = await new_network(api, "Other")
    assert await statement(api, other.owner.key, owner.id, period) is None
    usd = await statement(api, owner.key, owner.id, period, "USD")
    assert usd["lines"] == [] and usd["net"] == {"amount": "0.00"}

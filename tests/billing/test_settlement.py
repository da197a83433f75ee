from decimal import Decimal as D

from app.billing.money import RoundingMode
from app.billing.settlement import Direction, StatementLine, party_lines, totals
from app.billing.waterfall import Leg, MetricUsage, ShareKind, split_service

OWNER, CITYCAR, FLEETCARE, PARKSPACE, HELPDESK, CALLCENTER = "owner", "citycar", "fleetcare", "parkspace", "helpdesk", "callcenter"
LEGS = [
    Leg(1, OWNER, HELPDESK, ShareKind.PERCENT, percent=D(2), seq=1),
    Leg(2, OWNER, PARKSPACE, ShareKind.PER_UNIT, amount=D("0.02"), metric="minutes", seq=2),
    Leg(3, OWNER, CITYCAR, ShareKind.PERCENT, percent=D(85), seq=3),
    Leg(4, CITYCAR, FLEETCARE, ShareKind.PER_EVENT, amount=D("0.50"), metric="rental", seq=4),
    Leg(5, HELPDESK, CALLCENTER, ShareKind.PERCENT, percent=D(40), seq=5),
]
USAGE = {"minutes": MetricUsage(D(30), 1), "rental": MetricUsage(D(1), 1)}
SPLIT = split_service(OWNER, 970, LEGS, USAGE, 2, RoundingMode.HALF_UP)


def test_the_billing_party_receives_the_consumers_payments_and_pays_its_legs():
    lines = party_lines(OWNER, "cars", OWNER, 970, SPLIT)
    assert lines[0] == StatementLine(None, "cars", Direction.IN, 970)
    assert {(line.counterparty, line.amount) for line in lines[1:]} == {(HELPDESK, 19), (PARKSPACE, 60), (CITYCAR, 825)}
    assert all(line.direction is Direction.OUT for line in lines[1:])
    assert totals(lines).net == 66


def test_a_middle_party_keeps_what_it_receives_less_what_it_passes_on():
    lines = party_lines(HELPDESK, "cars", OWNER, 970, SPLIT)
    assert lines == [
        StatementLine(OWNER, "cars", Direction.IN, 19),
        StatementLine(CALLCENTER, "cars", Direction.OUT, 8),
    ]
    assert (totals(lines).receivable, totals(lines).payable, totals(lines).net) == (19, 8, 11)


def test_every_statement_nets_to_what_consumers_paid():
    parties = [OWNER, CITYCAR, FLEETCARE, PARKSPACE, HELPDESK, CALLCENTER]
    assert sum(totals(party_lines(p, "cars", OWNER, 970, SPLIT)).net for p in parties) == 970


def test_a_party_outside_the_chain_has_no_lines():
    assert party_lines("stranger", "cars", OWNER, 970, SPLIT) == []


def test_a_service_without_usage_gives_the_billing_party_no_line():
    empty = split_service(OWNER, 0, LEGS, {}, 2, RoundingMode.HALF_UP)
    assert party_lines(OWNER, "cars", OWNER, 0, empty) == []

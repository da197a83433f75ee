from decimal import Decimal as D

from app.billing.money import RoundingMode
from app.billing.settlement import Direction, Entry, StatementLine, corrections, split_entries, statement_lines, totals
from app.billing.waterfall import Leg, MetricUsage, ShareKind, split_service

OWNER, CITYCAR, FLEETCARE, PARKSPACE, HELPDESK, CALLCENTER = "owner", "citycar", "fleetcare", "parkspace", "helpdesk", "callcenter"
PARTIES = [OWNER, CITYCAR, FLEETCARE, PARKSPACE, HELPDESK, CALLCENTER]
LEGS = [
    Leg(1, OWNER, HELPDESK, ShareKind.PERCENT, percent=D(2), seq=1),
    Leg(2, OWNER, PARKSPACE, ShareKind.PER_UNIT, amount=D("0.02"), metric="minutes", seq=2),
    Leg(3, OWNER, CITYCAR, ShareKind.PERCENT, percent=D(85), seq=3),
    Leg(4, CITYCAR, FLEETCARE, ShareKind.PER_EVENT, amount=D("0.50"), metric="rental", seq=4),
    Leg(5, HELPDESK, CALLCENTER, ShareKind.PERCENT, percent=D(40), seq=5),
]


def period(minutes: int, rentals: int, payments: dict, minute_events: int | None = None) -> list[Entry]:
    usage = {"minutes": MetricUsage(D(minutes), rentals if minute_events is None else minute_events), "rental": MetricUsage(D(rentals), rentals)}
    split = split_service(OWNER, sum(payments.values()), LEGS, usage, 2, RoundingMode.HALF_UP)
    return split_entries("cars", OWNER, payments, split)


ONE_RENTAL = period(30, 1, {"alice": 970})


def test_the_billing_party_receives_the_consumers_payments_and_pays_its_legs():
    lines = statement_lines(OWNER, ONE_RENTAL)
    assert lines[0] == StatementLine(None, "cars", Direction.IN, 970)
    assert {(line.counterparty, line.amount) for line in lines[1:]} == {(HELPDESK, 19), (PARKSPACE, 60), (CITYCAR, 825)}
    assert all(line.direction is Direction.OUT for line in lines[1:])
    assert totals(lines).net == 66


def test_consumers_payments_are_one_line_per_service():
    entries = period(60, 2, {"alice": 970, "bob": 970})
    assert statement_lines(OWNER, entries)[0] == StatementLine(None, "cars", Direction.IN, 1940)
    assert statement_lines("bob", entries) == [StatementLine(OWNER, "cars", Direction.OUT, 970)]


def test_a_middle_party_keeps_what_it_receives_less_what_it_passes_on():
    lines = statement_lines(HELPDESK, ONE_RENTAL)
    assert lines == [StatementLine(OWNER, "cars", Direction.IN, 19), StatementLine(CALLCENTER, "cars", Direction.OUT, 8)]
    assert (totals(lines).receivable, totals(lines).payable, totals(lines).net) == (19, 8, 11)


def test_the_books_of_a_period_sum_to_zero():
    assert sum(totals(statement_lines(p, ONE_RENTAL)).net for p in [*PARTIES, "alice"]) == 0


def test_a_party_outside_the_chain_has_no_lines():
    assert statement_lines("stranger", ONE_RENTAL) == []


def test_a_late_rental_is_corrected_by_the_signed_difference_at_every_level():
    late = corrections(period(60, 2, {"alice": 1940}), ONE_RENTAL, "2026-10")
    by_flow = {(e.payer, e.payee): e.amount for e in late}
    assert by_flow == {("alice", OWNER): 970, (OWNER, HELPDESK): 20, (OWNER, PARKSPACE): 60, (OWNER, CITYCAR): 824, (CITYCAR, FLEETCARE): 50, (HELPDESK, CALLCENTER): 8}
    assert all(e.adjustment and e.origin_period == "2026-10" for e in late)


def test_a_void_after_close_gives_negative_adjustments_in_the_same_direction():
    rental_voided = period(30, 0, {"alice": 870}, minute_events=1)
    lines = statement_lines(CITYCAR, corrections(rental_voided, ONE_RENTAL, "2026-10"))
    assert lines == [
        StatementLine(OWNER, "cars", Direction.IN, -85, True, "2026-10"),
        StatementLine(FLEETCARE, "cars", Direction.OUT, -50, True, "2026-10"),
    ]


def test_a_second_correction_books_only_what_the_first_did_not():
    first = corrections(period(60, 2, {"alice": 1940}), ONE_RENTAL, "2026-10")
    second = corrections(period(90, 3, {"alice": 2910}), ONE_RENTAL + first, "2026-10")
    total = {}
    for e in ONE_RENTAL + first + second:
        total[(e.payer, e.payee)] = total.get((e.payer, e.payee), 0) + e.amount
    expected = {(e.payer, e.payee): e.amount for e in period(90, 3, {"alice": 2910})}
    assert total == expected
    assert corrections(period(90, 3, {"alice": 2910}), ONE_RENTAL + first + second, "2026-10") == []

"""Running totals: lines kept batch by batch price exactly like lines priced from scratch, and the
changes that would leave the 64-bit range are the ones refused."""

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from app.billing.money import RoundingMode, to_micros
from app.billing.pricing import Charge, ChargeModel, price_line, usage_of
from app.billing.running_totals import MAX_TOTAL, Change, deltas_of, overflowing, reprice, totals_overflow
from tests.billing.strategies import charges, decimals

PERIOD = "2026-11"
SERVICE = 7


@st.composite
def histories(draw):
    """A plan of two metrics and batches of changes: new events, and voids of live ones."""
    plan = {"a": draw(charges()), "b": draw(charges())}
    live: list[tuple[int, str, int]] = []  # (consumer, metric, micros) of events not voided
    batches = []
    for _ in range(draw(st.integers(1, 5))):
        batch = []
        for _ in range(draw(st.integers(1, 8))):
            if live and draw(st.booleans()) and draw(st.booleans()):
                consumer, metric, micros = live.pop(draw(st.integers(0, len(live) - 1)))
                batch.append(Change(PERIOD, SERVICE, consumer, metric, micros, -1))
            else:
                event = (draw(st.integers(1, 3)), draw(st.sampled_from("ab")), to_micros(draw(decimals(10**6))))
                live.append(event)
                batch.append(Change(PERIOD, SERVICE, *event, 1))
        batches.append(batch)
    return plan, batches, live


@given(history=histories(), exponent=st.sampled_from([0, 2, 3]), mode=st.sampled_from(list(RoundingMode)))
def test_lines_kept_batch_by_batch_price_like_lines_from_scratch(history, exponent, mode):
    plan, batches, live = history
    charge_of = lambda _service, _period, metric: plan[metric]  # noqa: E731
    stored, usage, revenue = {}, {}, 0
    for batch in batches:
        deltas = deltas_of(batch, charge_of)
        repriced = reprice(stored, deltas, charge_of, lambda _: exponent, mode)
        assert not repriced.overflow
        stored.update(repriced.lines)
        revenue += sum(repriced.revenue.values())
        for key, (events, quantity) in deltas.usage.items():
            old = usage.get(key, (0, 0))
            usage[key] = (old[0] + events, old[1] + quantity)
    for consumer in (1, 2, 3):
        for metric, charge in plan.items():
            quantities = [micros for c, m, micros in live if (c, m) == (consumer, metric)]
            line = stored.get((PERIOD, SERVICE, consumer, metric), (0,) * 7)
            expected = usage_of(charge, [Decimal(q).scaleb(-6) for q in quantities])
            assert line[:2] == (expected.events, sum(quantities))
            assert line[2:5] == (expected.min_events, expected.max_events, expected.mid_events)
            assert line[6] == (price_line(charge, expected, exponent, mode) if quantities else 0)
    assert revenue == sum(line[6] for line in stored.values())
    for metric in plan:
        events, quantity = usage.get((PERIOD, SERVICE, metric), (0, 0))
        assert (events, quantity) == (sum(1 for _, m, _ in live if m == metric), sum(q for _, m, q in live if m == metric))


UNIT = Charge("m", ChargeModel.PER_UNIT, unit_price=Decimal(0))


def test_the_changes_past_the_64_bit_range_are_the_ones_refused_one_at_a_time():
    charge_of = lambda *_: UNIT  # noqa: E731
    key = (PERIOD, SERVICE, 1, "m")
    stored = {key: (1, MAX_TOTAL - 10, 0, 0, 0, 0, 0)}
    changes = [Change(PERIOD, SERVICE, 1, "m", 5, 1), Change(PERIOD, SERVICE, 1, "m", 10, 1), Change(PERIOD, SERVICE, 1, "m", 3, 1)]
    deltas = deltas_of(changes, charge_of)
    repriced = reprice(stored, deltas, charge_of, lambda _: 2, RoundingMode.HALF_UP)
    assert totals_overflow(repriced, deltas, {}, {})
    assert overflowing(changes, stored, {}, {}, charge_of, lambda _: 2, RoundingMode.HALF_UP) == [1]
    # The service's usage counts too, even where every line stays in range.
    fresh = [Change(PERIOD, SERVICE, 2, "m", 4, 1)]
    usage_totals = {(PERIOD, SERVICE, "m"): (1, MAX_TOTAL - 3)}
    fresh_deltas = deltas_of(fresh, charge_of)
    assert totals_overflow(reprice({}, fresh_deltas, charge_of, lambda _: 2, RoundingMode.HALF_UP), fresh_deltas, usage_totals, {})
    assert overflowing(fresh, {}, usage_totals, {}, charge_of, lambda _: 2, RoundingMode.HALF_UP) == [0]

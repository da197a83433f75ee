"""Fuzzing: queries and mutations generated from the schema (hypothesis-graphql), posted through the
app with a network owner's key. No answer may be a 5xx, no error may be an unexpected fault
(`INTERNAL`, masked or not), and every error raised while executing carries a code.

The generated values reach past validation: IDs are drawn from the network's real global ids
(and a few broken ones), decimals and date-times from well-formed and malformed strings."""

import json
import string
from datetime import UTC, datetime

import graphql
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import from_schema

from graph.schema import schema
from tests.conftest import BACKENDS
from tests.graph.conftest import mobility_network

CASES = 2000
"""Operations per `make test`, shared out between the database backends that run (SQLite alone:
all of them; with PostgreSQL: half each), which keeps the fuzzing near a minute either way."""

# Its own settings, not the profile: a fixed budget of cases, no deadline (database round-trips
# vary), the function-scoped fixtures are shared on purpose (one network for every case).
FUZZ = settings(
    max_examples=-(-CASES // len(BACKENDS)),
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    database=None,
)

_PRINTABLE = st.text(alphabet=string.printable, max_size=12)
# Mostly well-formed, so that operations get past validation into the resolvers; a malformed
# literal fails the whole document's validation (the scalars' own tests cover those).
DECIMALS = st.one_of(
    st.decimals(allow_nan=False, allow_infinity=False, places=3, min_value=-10**6, max_value=10**6).map(str),
    st.integers(min_value=0, max_value=10**30).map(str),
    st.sampled_from(["0", "1", "0.29", "-1", "1e3", "1E+400", "0.0001", "-0", "99999999999999999999.999", "NaN", ""]),
)
DATETIMES = st.one_of(
    st.datetimes(timezones=st.just(UTC)).map(lambda d: d.isoformat()),
    st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)).map(lambda d: d.isoformat()),
    st.sampled_from(["2026-11-05T12:00:00Z", "2026-11-05T12:00:00", "0001-01-01T00:00:00+00:00", "9999-12-31T23:59:59+14:00"]),
)
BROKEN_IDS = ["", "????", "UGFydHk6", "UGFydHk6LTE=", "UGFydHk6OTk5OTk5OTk5OTk5OTk5OTk5OTk5", "U2VydmljZTp4", "TmV0d29yazox"]


def node(strategy):
    return strategy.map(lambda value: graphql.StringValueNode(value=value))


def operations(ids: list[str]):
    return from_schema(
        schema._schema,
        custom_scalars={
            "ID": node(st.one_of(st.sampled_from(ids), st.sampled_from(BROKEN_IDS), _PRINTABLE)),
            "Decimal": node(DECIMALS),
            "DateTime": node(DATETIMES),
        },
    )


def problems(status: int, body: dict) -> list[str]:
    found = []
    if status >= 500:
        found.append(f"HTTP {status}")
    for error in body.get("errors") or []:
        code = (error.get("extensions") or {}).get("code")
        if code == "INTERNAL":
            found.append(f"INTERNAL: {error}")
        elif error.get("path") and not code:
            found.append(f"an execution error without a code: {error}")
    return found


@pytest.fixture
async def mobility(api):
    return await mobility_network(api)


_STRATEGIES: dict[tuple[str, ...], st.SearchStrategy[str]] = {}


@pytest.fixture(scope="module")
def cases():
    """Operations posted per backend; afterwards each backend that ran must have had its share
    (Hypothesis stops early only when it runs out of distinct cases, which would be worth knowing)."""
    counts = {"failed": False}
    yield counts
    if not counts.pop("failed"):
        for backend, count in counts.items():
            assert count >= FUZZ.max_examples, f"{backend}: only {count} operations were generated"


@FUZZ
@given(data=st.data())
async def test_generated_operations_answer_without_faults(rt, mobility, client, cases, data):
    members = (mobility.citycar, mobility.fleetcare, mobility.parkspace, mobility.helpdesk, mobility.callcenter)
    ids = (mobility.net.id, mobility.net.owner.id, mobility.service_id, *(m.id for m in members))
    strategy = _STRATEGIES.get(ids)
    if strategy is None:
        _STRATEGIES.clear()
        strategy = _STRATEGIES[ids] = operations(list(ids))
    query = data.draw(strategy, label="operation")
    response = await client.post("/graphql", json={"query": query}, headers={"Authorization": f"Bearer {mobility.net.owner.key}"})
    backend = rt.engine.dialect.name
    cases[backend] = cases.get(backend, 0) + 1
    body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
    found = problems(response.status_code, body)
    cases["failed"] = cases["failed"] or bool(found)
    assert not found, (response.status_code, json.dumps(body)[:2000])

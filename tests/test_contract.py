"""The contract (`tests/contract.graphql`, the repository's copy of the one beside the design) has no
breaking change against the schema this code serves: graphql-core's `find_breaking_changes`, in
full, with no allow-list.

Only parts of the contract that are not built yet may be missing, each named in NOT_YET_BUILT, and
the test asserts that the breaks found are exactly those: a new break fails it, and so does a gap
that got filled (strike it from the list)."""

from pathlib import Path

from graphql import build_schema, find_breaking_changes

from graph.schema import schema

CONTRACT = Path(__file__).parent / "contract.graphql"
SHARED_CONTRACT = Path(__file__).parents[1].parent / "shared" / "contract.graphql"
"The design's copy, beside a checkout that has it (CI's does): the repository's must match it."

NOT_YET_BUILT: set[tuple[str, str]] = set()
"""(change type, description) of the contract's parts not built yet; empty since the subscriptions
(Subscription, SettlementUpdate) landed."""


def test_the_served_schema_breaks_nothing_in_the_contract():
    contract = build_schema(CONTRACT.read_text())
    breaks = {(change.type.name, change.description) for change in find_breaking_changes(contract, schema._schema)}
    assert breaks - NOT_YET_BUILT == set(), "the served schema breaks the contract"
    assert NOT_YET_BUILT - breaks == set(), "built now: strike these from NOT_YET_BUILT"


def test_the_repositorys_contract_is_the_designs(capsys):
    if not SHARED_CONTRACT.exists():
        with capsys.disabled():
            print(f"\n[contract] {SHARED_CONTRACT} is not here: the repository's copy alone is checked")
        return
    assert CONTRACT.read_text() == SHARED_CONTRACT.read_text(), "tests/contract.graphql differs from the design's: copy it over"

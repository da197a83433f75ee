from pathlib import Path

from graph.schema import schema

ROOT = Path(__file__).resolve().parents[2]


def test_the_checked_in_schema_is_what_the_code_serves():
    checked_in = (ROOT / "schema.graphql").read_text()
    assert checked_in.strip() == schema.as_str().strip(), "schema.graphql is stale: run `make schema`"

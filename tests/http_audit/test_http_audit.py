"""GraphQL over HTTP: graphql-http's server audit (npm) against a real `shareflow serve`.

Every MUST passes, and every SHOULD too, those about application/graphql-response+json included
(the media type is echoed when asked for; parse, validation and variable failures then answer 400
without `data`). The audit's documents only read the schema, which needs no key; it runs once
anonymously and once with the operator key in the Authorization header (its fetchFn wrapper), so
that the authenticated path (key lookup, rate limit, fast path) is audited too."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from tests.servers import serving, shareflow

HERE = Path(__file__).parent
OPERATOR_KEY = "sf_operator_audit_key_0123456789"
# The audits about application/graphql-response+json that strawberry alone leaves as warnings.
GRAPHQL_RESPONSE_JSON_SHOULDS = {"22EB", "865D", "556A", "D586", "51FE", "74FF", "5E5B", "86EE"}


@pytest.fixture(scope="module")
def node_modules() -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.fail("node and npm are needed for the GraphQL over HTTP audit (Node 20 is on the machine image)")
    if not (HERE / "node_modules" / "graphql-http").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=HERE, check=True, capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`shareflow serve` on a free 127.0.0.1 port over a fresh SQLite database: its /graphql URL."""
    home = tmp_path_factory.mktemp("audit")
    env = {
        **os.environ,
        "SHAREFLOW_DATABASE_URL": f"sqlite+aiosqlite:///{home / 'audit.db'}",
        "SHAREFLOW_OPERATOR_KEY": OPERATOR_KEY,
    }
    env.pop("SHAREFLOW_REDIS_URL", None)
    assert shareflow(home, env, "migrate").returncode == 0
    with serving(home, env) as base:
        yield f"{base}/graphql"


def audit(url: str, key: str | None = None) -> list[dict]:
    command = ["node", str(HERE / "audit.mjs"), url, *([key] if key else [])]
    done = subprocess.run(command, cwd=HERE, check=True, capture_output=True, text=True, timeout=120)
    return json.loads(done.stdout)


def failures(results: list[dict], level: str) -> list[dict]:
    return [r for r in results if r["name"].startswith(level) and r["status"] != "ok"]


@pytest.mark.parametrize("key", [None, OPERATOR_KEY], ids=["anonymous", "with-a-key"])
def test_every_must_and_should_of_graphql_over_http_passes(node_modules, server, key):
    results = audit(server, key)
    assert len(results) >= 61, len(results)
    assert {r["id"] for r in results} >= GRAPHQL_RESPONSE_JSON_SHOULDS
    assert failures(results, "MUST") == []
    assert failures(results, "SHOULD") == []

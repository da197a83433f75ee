"""GraphQL over HTTP: graphql-http's server audit (npm) against a real `shareflow serve`.

Every MUST passes, and every SHOULD too, those about application/graphql-response+json included
(the media type is echoed when asked for; parse, validation and variable failures then answer 400
without `data`). The audit's documents only read the schema, which needs no key; it runs once
anonymously and once with the operator key in the Authorization header (its fetchFn wrapper), so
that the authenticated path (key lookup, rate limit, fast path) is audited too."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

HERE = Path(__file__).parent
BIN = Path(sys.executable).parent
OPERATOR_KEY = "sf_operator_audit_key_0123456789"
# The audits about application/graphql-response+json that strawberry alone leaves as warnings.
GRAPHQL_RESPONSE_JSON_SHOULDS = {"22EB", "865D", "556A", "D586", "51FE", "74FF", "5E5B", "86EE"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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
    subprocess.run([BIN / "shareflow", "migrate"], env=env, cwd=home, check=True, capture_output=True, timeout=120)
    port = _free_port()
    log = open(home / "serve.log", "wb")
    process = subprocess.Popen(
        [BIN / "shareflow", "serve", "--host", "127.0.0.1", "--port", str(port)], env=env, cwd=home, stdout=log, stderr=log
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"shareflow serve did not come up: {(home / 'serve.log').read_text()}")
            time.sleep(0.1)
        yield f"{base}/graphql"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


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

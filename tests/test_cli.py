"""The `shareflow` command, run as a user runs it: migrate, demo, create-network, serve."""

import json
import os
import subprocess
from datetime import UTC, datetime

import httpx
import pytest

from tests.servers import serving, shareflow



@pytest.fixture
def workdir(tmp_path) -> dict:
    env = {**os.environ, "SHAREFLOW_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path}/shareflow.db"}
    return {"cwd": tmp_path, "env": env}


def run(workdir: dict, *args: str) -> subprocess.CompletedProcess:
    return shareflow(workdir["cwd"], workdir["env"], *args)


def test_create_network_prints_the_owner_key_as_json(workdir):
    assert run(workdir, "migrate").returncode == 0
    done = run(workdir, "create-network", "--name", "Ride", "--currency", "JPY", "--owner-name", "Ride KK")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(result) == {"networkId", "ownerApiKey"} and result["ownerApiKey"].startswith("sf_")


def test_create_network_refuses_a_bad_currency_with_its_field(workdir):
    run(workdir, "migrate")
    done = run(workdir, "create-network", "--name", "Ride", "--currency", "EURO", "--owner-name", "Ride KK")
    assert done.returncode == 2
    assert json.loads(done.stderr)["errors"][0]["code"] == "INVALID_CURRENCY"


def test_the_demo_serves_the_worked_example_with_a_printed_key(workdir):
    assert run(workdir, "migrate").returncode == 0
    demo = run(workdir, "demo")
    assert demo.returncode == 0, demo.stderr
    keys = {line.rsplit(None, 1)[0].strip(): line.rsplit(None, 1)[1] for line in demo.stdout.splitlines()[1:]}
    assert set(keys) >= {"MobilityHub", "CityCar", "FleetCare", "ParkSpace", "HelpDesk24", "CallCenter Nord"}
    owner_key = keys["MobilityHub"]
    again = run(workdir, "demo")
    assert owner_key in again.stdout, "a second run prints the same keys and seeds nothing twice"

    with serving(workdir["cwd"], workdir["env"]) as url:
        headers = {"Authorization": f"Bearer {owner_key}"}
        me = httpx.post(f"{url}/graphql", json={"query": "{ me { party { name } } }"}, headers=headers).json()
        assert me == {"data": {"me": {"party": {"name": "MobilityHub"}}}}
        services = httpx.post(
            f"{url}/graphql", json={"query": "{ network { services { edges { node { id name } } } } }"}, headers=headers
        ).json()["data"]["network"]["services"]["edges"]
        car = next(edge["node"]["id"] for edge in services if edge["node"]["name"] == "Car sharing")
        quote = httpx.post(
            f"{url}/graphql",
            json={
                "query": 'query($s: ID!) { quote(serviceId: $s, usage: [{metric: "minutes", quantity: "30"}, {metric: "rental", quantity: "1"}]) { total { amount } } }',
                "variables": {"s": car},
            },
            headers=headers,
        ).json()
        assert quote["data"]["quote"]["total"]["amount"] == "9.70"


def test_import_usage_records_a_file_once_however_often_it_runs(workdir):
    run(workdir, "migrate")
    keys = {line.rsplit(None, 1)[0].strip(): line.rsplit(None, 1)[1] for line in run(workdir, "demo").stdout.splitlines()[1:]}
    csv_file = workdir["cwd"] / "usage.csv"
    now = datetime.now(UTC).replace(microsecond=0).isoformat()
    csv_file.write_text(
        "idempotencyKey,serviceId,consumerRef,metric,quantity,occurredAt\n"
        f"b1,U2VydmljZTox,alice,minutes,30,{now}\n"
        f"b2,U2VydmljZTox,alice,rental,1,{now}\n"
        f"b3,U2VydmljZTox,bob,minutes,1.0000001,{now}\n"
    )
    first = run(workdir, "import-usage", str(csv_file), "--api-key", keys["CityCar"], "--no-progress")
    report = json.loads(first.stdout)
    assert (report["accepted"], report["duplicates"], report["rejected"]) == (2, 0, 1)
    assert report["problems"][0]["row"] == 3 and report["problems"][0]["code"] == "TOO_MANY_DECIMALS"
    second = json.loads(run(workdir, "import-usage", str(csv_file), "--api-key", keys["CityCar"], "--no-progress").stdout)
    assert (second["accepted"], second["duplicates"]) == (0, 2)


def test_import_usage_refuses_an_unknown_key(workdir):
    run(workdir, "migrate")
    (workdir["cwd"] / "empty.ndjson").write_text("")
    done = run(workdir, "import-usage", str(workdir["cwd"] / "empty.ndjson"), "--api-key", "sf_nope_nope")
    assert done.returncode != 0 and "unknown" in done.stderr


def test_import_usage_of_a_file_it_cannot_read_says_so_without_a_traceback(workdir):
    run(workdir, "migrate")
    keys = {line.rsplit(None, 1)[0].strip(): line.rsplit(None, 1)[1] for line in run(workdir, "demo").stdout.splitlines()[1:]}
    done = run(workdir, "import-usage", str(workdir["cwd"] / "missing.ndjson"), "--api-key", keys["CityCar"], "--no-progress")
    assert done.returncode != 0
    assert "cannot read" in done.stderr and "missing.ndjson" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("setting, compressed", [(None, False), ("true", True)])
def test_serve_compresses_websocket_messages_only_when_told_to(workdir, setting, compressed):
    from websockets.sync.client import connect

    run(workdir, "migrate")
    env = dict(workdir["env"])
    if setting is not None:
        env["SHAREFLOW_WS_COMPRESSION"] = setting
    with serving(workdir["cwd"], env) as url:
        with connect(url.replace("http", "ws", 1) + "/graphql", subprotocols=["graphql-transport-ws"]) as socket:
            extensions = socket.response.headers.get("Sec-WebSocket-Extensions") or ""
    assert ("permessage-deflate" in extensions) is compressed

"""Scale-out: two `shareflow serve` processes on different ports sharing a fresh PostgreSQL database
and Redis, the way a deployment runs N of them behind a load balancer. Runs when
SHAREFLOW_TEST_POSTGRES_URL and SHAREFLOW_TEST_REDIS_URL are set (CI sets both)."""

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import OPERATOR_KEY, POSTGRES_URL, Api, _drop_postgres_database, _postgres_database
from tests.graph.conftest import mobility_network
from tests.graph.test_record_usage import RECORD, event
from tests.graph.test_subscriptions import TRANSPORT_WS, LEGACY_WS, UPDATED, GraphQLSocket, free_port, totals

REDIS_URL = os.environ.get("SHAREFLOW_TEST_REDIS_URL")
SHAREFLOW = Path(sys.executable).parent / "shareflow"
ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(
    not (POSTGRES_URL and REDIS_URL), reason="needs SHAREFLOW_TEST_POSTGRES_URL and SHAREFLOW_TEST_REDIS_URL"
)


@pytest.fixture(scope="module")
async def cluster(tmp_path_factory):
    """Two gateway processes on one fresh database and Redis: yields their base URLs."""
    url, name = await _postgres_database()
    logs = tmp_path_factory.mktemp("scale-out")
    env = {
        **os.environ,
        "SHAREFLOW_DATABASE_URL": url,
        "SHAREFLOW_REDIS_URL": REDIS_URL,
        "SHAREFLOW_OPERATOR_KEY": OPERATOR_KEY,
    }
    processes = []
    try:
        subprocess.run([str(SHAREFLOW), "migrate"], env=env, cwd=ROOT, check=True, capture_output=True, timeout=120)
        bases = []
        for index in range(2):
            port = free_port()
            log = open(logs / f"serve-{index}.log", "wb")
            processes.append(
                subprocess.Popen(
                    [str(SHAREFLOW), "serve", "--host", "127.0.0.1", "--port", str(port)],
                    env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                )
            )
            bases.append(f"127.0.0.1:{port}")
        async with httpx.AsyncClient() as client:
            deadline = time.monotonic() + 60
            for base, process in zip(bases, processes):
                while True:
                    assert process.poll() is None, (logs / f"serve-{processes.index(process)}.log").read_text()
                    with contextlib.suppress(httpx.HTTPError):
                        if (await client.get(f"http://{base}/readyz")).status_code == 200:
                            break
                    assert time.monotonic() < deadline, "a gateway process did not become ready"
                    await asyncio.sleep(0.1)
        yield bases
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        await _drop_postgres_database(name)


@contextlib.asynccontextmanager
async def api_on(base: str):
    async with httpx.AsyncClient(base_url=f"http://{base}", timeout=30) as client:
        yield Api(client)


@pytest.mark.parametrize("protocol", [TRANSPORT_WS, LEGACY_WS])
async def test_a_subscriber_on_one_process_gets_the_exact_totals_of_usage_recorded_through_another(cluster, protocol):
    first, second = cluster
    async with api_on(second) as api:
        mobility = await mobility_network(api)
        async with GraphQLSocket.open(f"ws://{first}/graphql", protocol, f"Bearer {mobility.helpdesk.key}") as ws:
            op = await ws.subscribe(UPDATED)
            assert totals(await ws.next(op)) == ("0.00", "0.00", "0.00")
            sid = mobility.service_id
            payload = (await api.data(RECORD, {"events": [event(sid, "m1"), event(sid, "r1", metric="rental", quantity="1")]}, mobility.citycar.key))["recordUsage"]
            assert payload["accepted"] == 2
            assert totals(await ws.next(op)) == ("0.19", "0.08", "0.11")


async def test_the_same_key_sent_20_times_at_once_through_two_processes_is_stored_once(cluster):
    async with api_on(cluster[0]) as one, api_on(cluster[1]) as two:
        mobility = await mobility_network(one)
        same = event(mobility.service_id, "once")
        sends = [(one if i % 2 else two).data(RECORD, {"events": [same]}, mobility.citycar.key) for i in range(20)]
        results = [r["recordUsage"] for r in await asyncio.gather(*sends)]
        assert sorted(r["results"][0]["status"] for r in results) == ["ACCEPTED"] + ["DUPLICATE"] * 19
        events = (await two.data("{ usageEvents(first: 100) { edges { node { idempotencyKey quantity } } } }", key=mobility.net.owner.key))
        assert [e["node"] for e in events["usageEvents"]["edges"]] == [{"idempotencyKey": "once", "quantity": "30"}]
        revenue = await one.data("query($id: ID!) { service(id: $id) { revenue { amount } } }", {"id": mobility.service_id}, mobility.net.owner.key)
        assert revenue["service"]["revenue"]["amount"] == "8.70"


async def test_a_revocation_through_one_process_closes_the_socket_on_the_other_at_once(cluster):
    from tests.graph.test_api_keys import KEYS, REVOKE
    from tests.graph.test_subscriptions import Closed

    first, second = cluster
    async with api_on(second) as api:
        mobility = await mobility_network(api)
        partner = mobility.parkspace
        async with GraphQLSocket.open(f"ws://{first}/graphql", TRANSPORT_WS, f"Bearer {partner.key}") as ws:
            op = await ws.subscribe(UPDATED)
            await ws.next(op)
            [key] = (await api.data(KEYS, {"id": partner.id}, partner.key))["party"]["apiKeys"]
            await api.data(REVOKE, {"id": key["id"]}, partner.key)
            # through Redis, well before the other process's key cache (2 s) lets the key go
            assert (await ws.wait_closed(timeout=1.5)).code == 4403
            assert isinstance(await ws.next(op), Closed)

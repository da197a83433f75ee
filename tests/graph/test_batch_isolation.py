"""A batch's fault is its own: a batch that fails inside the database itself answers INTERNAL
(masked, with a request id, logged at ERROR) and writes nothing, while the batches of other
networks beside it, on SQLite in the same commit, are all recorded."""

import asyncio
import json
import logging
import uuid
from contextlib import asynccontextmanager

import pytest

from app.sqlite import group_commit, write_turn
from tests.graph.conftest import mobility_network
from tests.graph.test_record_usage import EVENTS, RECORD, event

POISON = "poison-key"

# How the database refuses the poisoned key: in the statement that inserts it, by ending the whole
# transaction (SQLite's RAISE(ROLLBACK)), or only at the commit (a deferred constraint). Each
# fixture names its own objects: a SQLite connection that knew a dropped trigger may still
# refuse to create one of that name.
_SQLITE = {
    "statement": ["CREATE TRIGGER {name} BEFORE INSERT ON usage_events WHEN NEW.idempotency_key = '{key}' "
                  "BEGIN SELECT RAISE(ABORT, 'poisoned key'); END"],
    "transaction": ["CREATE TRIGGER {name} BEFORE INSERT ON usage_events WHEN NEW.idempotency_key = '{key}' "
                    "BEGIN SELECT RAISE(ROLLBACK, 'poisoned key'); END"],
    "commit": ["CREATE TABLE {name}_box (network_id INTEGER REFERENCES networks (id) DEFERRABLE INITIALLY DEFERRED)",
               "CREATE TRIGGER {name} AFTER INSERT ON usage_events WHEN NEW.idempotency_key = '{key}' "
               "BEGIN INSERT INTO {name}_box VALUES (-1); END"],
}
_POSTGRES_FUNCTION = (
    "CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
    "IF NEW.idempotency_key = '{key}' THEN RAISE EXCEPTION 'poisoned key'; END IF; RETURN NEW; END $$"
)
_POSTGRES = {
    "statement": [_POSTGRES_FUNCTION, "CREATE TRIGGER {name} BEFORE INSERT ON usage_events FOR EACH ROW EXECUTE FUNCTION {name}()"],
    "transaction": [_POSTGRES_FUNCTION, "CREATE TRIGGER {name} BEFORE INSERT ON usage_events FOR EACH ROW EXECUTE FUNCTION {name}()"],
    "commit": [_POSTGRES_FUNCTION, "CREATE CONSTRAINT TRIGGER {name} AFTER INSERT ON usage_events DEFERRABLE INITIALLY DEFERRED "
                                   "FOR EACH ROW EXECUTE FUNCTION {name}()"],
}
_CLEAN_UP = {
    "sqlite": ["DROP TRIGGER {name}", "DROP TABLE IF EXISTS {name}_box"],
    "postgresql": ["DROP TRIGGER {name} ON usage_events", "DROP FUNCTION {name}()"],
}


@pytest.fixture(params=["statement", "transaction", "commit"])
async def poisoned(rt, request):
    """The database refuses to store POISON, as `request.param` says."""
    dialect = rt.engine.dialect.name
    names = {"name": f"poison_{uuid.uuid4().hex[:8]}", "key": POISON}
    async with rt.engine.begin() as connection:
        for sql in (_SQLITE if dialect == "sqlite" else _POSTGRES)[request.param]:
            await connection.exec_driver_sql(sql.format(**names))
    yield request.param
    async with rt.engine.begin() as connection:
        for sql in _CLEAN_UP[dialect]:
            await connection.exec_driver_sql(sql.format(**names))


async def _until(condition) -> None:
    async def poll():
        while not condition():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), 30)


class _Together:
    """Holds SQLite's writer (the test's own write turn) so that the batches submitted meanwhile
    wait for one transaction together; beyond SQLite each batch has its own transaction anyway."""

    def __init__(self, rt) -> None:
        self.sqlite = rt.engine.dialect.name == "sqlite"
        self.group = group_commit(rt.engine, rt.sessions) if self.sqlite else None

    async def writing(self) -> None:
        """Until the writer took the batches submitted so far (it then waits for the turn)."""
        if self.sqlite:
            await _until(lambda: self.group.writer is not None and not self.group.waiting)

    async def waiting(self, count: int) -> None:
        """Until `count` batches wait for the next transaction."""
        if self.sqlite:
            await _until(lambda: len(self.group.waiting) == count)


@asynccontextmanager
async def one_commit(rt):
    """Batches submitted inside the block wait for one transaction together, the one after the
    transaction of those submitted before `writing()`: the writer is held until the block ends."""
    together = _Together(rt)
    if not together.sqlite:
        yield together
        return
    async with rt.sessions() as holder, write_turn(holder):
        yield together


async def record(api, key: str, events: list[dict]) -> dict:
    response = await api.client.post("/graphql", json={"query": RECORD, "variables": {"events": events}},
                                      headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    return response.json()


async def stored_keys(api, key: str) -> list[str]:
    return [e["node"]["idempotencyKey"] for e in (await api.data(EVENTS, key=key))["usageEvents"]["edges"]]


async def test_a_batch_that_fails_in_the_database_fails_alone_and_other_networks_batches_beside_it_commit(rt, api, poisoned, caplog):
    first, poisoned_network, *others = [await mobility_network(api) for _ in range(4)]
    sid = poisoned_network.service_id
    async with one_commit(rt) as together:
        opener = asyncio.ensure_future(record(api, first.citycar.key, [event(first.service_id, "opener")]))
        await together.writing()
        batches = [
            asyncio.ensure_future(record(api, poisoned_network.citycar.key, [event(sid, "fine-before"), event(sid, POISON)])),
            *(asyncio.ensure_future(record(api, net.citycar.key, [event(net.service_id, f"beside-{i}") for i in range(3)]))
              for net in others),
        ]
        await together.waiting(len(batches))  # the poisoned batch and the others' in one transaction
    failed, *beside = await asyncio.gather(*batches)
    await opener

    assert failed["data"] is None
    assert [(e["path"], e["extensions"]["code"]) for e in failed["errors"]] == [(["recordUsage"], "INTERNAL")]
    request_id = failed["errors"][0]["extensions"]["requestId"]
    assert any(r.levelno == logging.ERROR and request_id in r.getMessage() for r in caplog.records)
    assert [(b.get("errors"), b["data"] and b["data"]["recordUsage"]["accepted"]) for b in beside] == [(None, 3), (None, 3)]
    assert await stored_keys(api, poisoned_network.net.owner.key) == []
    for net in others:
        assert await stored_keys(api, net.net.owner.key) == ["beside-0", "beside-1", "beside-2"]
    assert await stored_keys(api, first.net.owner.key) == ["opener"]
    # The poisoned network records again once its batch leaves the poisoned key out.
    again = await record(api, poisoned_network.citycar.key, [event(sid, "fine-before")])
    assert again["data"]["recordUsage"]["accepted"] == 1


async def test_an_ndjson_batch_that_fails_in_the_database_answers_its_items_internal_and_the_stream_goes_on(
        rt, api, poisoned, monkeypatch):
    from app.server import usage_ndjson

    monkeypatch.setattr(usage_ndjson, "BATCH", 2)
    net = await mobility_network(api)
    sid = net.service_id
    lines = [event(sid, "a"), event(sid, "b"), event(sid, "c"), event(sid, POISON), event(sid, "e")]
    response = await api.client.post("/usage.ndjson", content="".join(json.dumps(line) + "\n" for line in lines).encode(),
                                     headers={"Authorization": f"Bearer {net.citycar.key}"})
    assert response.status_code == 200, response.text
    *results, summary = [json.loads(line) for line in response.text.splitlines()]
    assert summary == {"accepted": 3, "duplicates": 0, "rejected": 2}
    assert [(r["index"], r["status"], [(e["field"], e["code"]) for e in r["errors"]]) for r in results] == [
        (0, "ACCEPTED", []), (1, "ACCEPTED", []),
        (2, "REJECTED", [(["events", "2"], "INTERNAL")]), (3, "REJECTED", [(["events", "3"], "INTERNAL")]),
        (4, "ACCEPTED", []),
    ]
    assert response.headers["x-request-id"] in results[2]["errors"][0]["message"]
    assert await stored_keys(api, net.net.owner.key) == ["a", "b", "e"]

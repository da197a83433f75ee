"""The HTTP face: health, readiness, and requests that are not GraphQL at all."""

import pytest

ME = "{ me { party { name } } }"


async def test_health_answers_while_the_process_is_up(client):
    response = await client.get("/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


async def test_readiness_checks_the_database(client):
    response = await client.get("/readyz")
    assert response.status_code == 200 and response.json() == {"status": "ready"}


async def test_readiness_fails_when_the_database_is_unreachable(tmp_path):
    import httpx

    from app.server.app import create_app
    from app.settings import Settings

    app = create_app(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/missing/dir/x.db"))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        response = await client.get("/readyz")
    assert response.status_code == 503 and response.json()["status"] == "unavailable"


async def test_malformed_json_is_a_400(client, network):
    response = await client.post(
        "/graphql",
        content=b'{"query": "{ me { party { name } } "',
        headers={"Authorization": f"Bearer {network.owner.key}", "Content-Type": "application/json"},
    )
    assert response.status_code == 400


async def test_a_body_that_is_not_json_or_graphql_is_refused(client, network):
    response = await client.post(
        "/graphql",
        content=b"query=me",
        headers={"Authorization": f"Bearer {network.owner.key}", "Content-Type": "text/plain"},
    )
    assert response.status_code in (400, 415)


async def test_an_unknown_field_is_a_validation_error_naming_it(api, network):
    body = await api.post("{ me { party { salary } } }", key=network.owner.key)
    assert body["data"] is None
    assert "salary" in body["errors"][0]["message"]


@pytest.mark.parametrize("bad_id", ["", "????", "UGFydHk6", "U2VydmljZTox", "UGFydHk6LTE=", "UGFydHk6OTk5OTk5OTk5OTk5OTk5OTk5OTk5"])
async def test_a_bad_global_id_finds_nothing_and_crashes_nothing(api, network, bad_id):
    body = await api.post("query($id: ID!) { party(id: $id) { name } }", {"id": bad_id}, network.owner.key)
    assert body["data"] is None or body["data"]["party"] is None
    for error in body.get("errors") or []:
        assert error["extensions"]["code"] == "NOT_FOUND"


async def test_a_query_too_deep_is_refused(api, network):
    deep = "{ me { party " + "{ agreements { payer " * 8 + "{ name }" + " } }" * 8 + " } }"
    body = await api.post(deep, key=network.owner.key)
    assert body["data"] is None and "depth" in body["errors"][0]["message"]

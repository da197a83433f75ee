ISSUE = """
mutation($party: ID!) {
  issueApiKey(partyId: $party) { key { id prefix party { name } revokedAt } apiKey errors { field code } }
}"""
REVOKE = """
mutation($id: ID!) {
  revokeApiKey(id: $id) { key { id revokedAt } errors { field code } }
}"""
KEYS = """
query($id: ID!) { party(id: $id) { name apiKeys { id prefix revokedAt } } }"""
ME = "{ me { party { name } } }"


async def test_the_owner_issues_a_key_for_a_partner_that_works_at_once(api, network):
    partner = await network.onboard("ParkSpace")
    payload = (await api.data(ISSUE, {"party": partner.id}, network.owner.key))["issueApiKey"]
    assert payload["errors"] == []
    assert payload["key"]["party"]["name"] == "ParkSpace"
    assert payload["apiKey"].startswith(payload["key"]["prefix"] + "_")
    assert (await api.data(ME, key=payload["apiKey"]))["me"]["party"]["name"] == "ParkSpace"


async def test_a_key_is_shown_once_and_listed_by_prefix_only(api, network):
    partner = await network.onboard("ParkSpace")
    listed = (await api.data(KEYS, {"id": partner.id}, partner.key))["party"]["apiKeys"]
    assert len(listed) == 1
    assert partner.key.startswith(listed[0]["prefix"])
    assert listed[0]["prefix"] != partner.key


async def test_a_revoked_key_is_refused_from_then_on(api, network):
    partner = await network.onboard("ParkSpace")
    [key] = (await api.data(KEYS, {"id": partner.id}, partner.key))["party"]["apiKeys"]
    payload = (await api.data(REVOKE, {"id": key["id"]}, partner.key))["revokeApiKey"]
    assert payload["errors"] == [] and payload["key"]["revokedAt"] is not None
    assert await api.error_code(ME, key=partner.key) == "UNAUTHENTICATED"


async def test_revoking_a_key_revokes_every_key_it_issued_down_the_line(api, network):
    owner = network.owner
    partner = await network.onboard("Partner")
    issued = (await api.data(ISSUE, {"party": partner.id}, partner.key))["issueApiKey"]["apiKey"]
    issued_by_issued = (await api.data(ISSUE, {"party": partner.id}, issued))["issueApiKey"]["apiKey"]
    sub_partner = await network.onboard("Sub-partner", by=partner)
    by_the_owner = (await api.data(ISSUE, {"party": partner.id}, owner.key))["issueApiKey"]["apiKey"]
    listed = (await api.data(KEYS, {"id": partner.id}, owner.key))["party"]["apiKeys"]
    [first] = [key["id"] for key in listed if partner.key.startswith(key["prefix"] + "_")]

    payload = (await api.data(REVOKE, {"id": first}, owner.key))["revokeApiKey"]
    assert payload["errors"] == [] and payload["key"]["revokedAt"] is not None

    for successor in (partner.key, issued, issued_by_issued, sub_partner.key):
        assert await api.error_code(ME, key=successor) == "UNAUTHENTICATED"
    for independent, name in ((by_the_owner, "Partner"), (owner.key, owner.name)):
        assert (await api.data(ME, key=independent))["me"]["party"]["name"] == name
    keys = (await api.data(KEYS, {"id": partner.id}, owner.key))["party"]["apiKeys"]
    assert sorted(key["revokedAt"] is None for key in keys) == [False, False, False, True]


async def test_revoking_twice_says_so(api, network):
    partner = await network.onboard("ParkSpace")
    [key] = (await api.data(KEYS, {"id": partner.id}, network.owner.key))["party"]["apiKeys"]
    await api.data(REVOKE, {"id": key["id"]}, network.owner.key)
    payload = (await api.data(REVOKE, {"id": key["id"]}, network.owner.key))["revokeApiKey"]
    assert payload["errors"] == [{"field": ["id"], "code": "ALREADY_REVOKED"}]


async def test_a_partner_cannot_see_issue_or_revoke_another_partners_keys(api, network):
    alice = await network.onboard("Alice")
    bob = await network.onboard("Bob")
    [bob_key] = (await api.data(KEYS, {"id": bob.id}, network.owner.key))["party"]["apiKeys"]
    # Bob is not in Alice's value chain: he does not exist for her.
    assert (await api.data(KEYS, {"id": bob.id}, alice.key))["party"] is None
    issued = (await api.data(ISSUE, {"party": bob.id}, alice.key))["issueApiKey"]
    assert issued == {"key": None, "apiKey": None, "errors": [{"field": ["partyId"], "code": "NOT_FOUND"}]}
    revoked = (await api.data(REVOKE, {"id": bob_key["id"]}, alice.key))["revokeApiKey"]
    assert revoked["errors"] == [{"field": ["id"], "code": "NOT_FOUND"}]
    assert (await api.data(ME, key=bob.key))["me"]["party"]["name"] == "Bob"


async def test_a_partner_sees_no_keys_of_a_counterparty(api, network):
    provider = await network.onboard("CityCar", "PROVIDER")
    service = await network.service("Cars", provider, [{"metric": "km", "model": "PER_UNIT", "unitPrice": "0.30"}])
    partner = await network.onboard("FleetCare")
    assert (await network.agree(provider, partner, service, {"kind": "PERCENT", "percent": "5"}, by=network.owner))["errors"] == []
    seen = (await api.data(KEYS, {"id": provider.id}, partner.key))["party"]
    assert seen == {"name": "CityCar", "apiKeys": []}


async def test_another_networks_owner_cannot_touch_this_networks_keys(api, network):
    from tests.graph.conftest import new_network

    other = await new_network(api, "Other")
    partner = await network.onboard("ParkSpace")
    [key] = (await api.data(KEYS, {"id": partner.id}, network.owner.key))["party"]["apiKeys"]
    assert (await api.data(ISSUE, {"party": partner.id}, other.owner.key))["issueApiKey"]["errors"][0]["code"] == "NOT_FOUND"
    assert (await api.data(REVOKE, {"id": key["id"]}, other.owner.key))["revokeApiKey"]["errors"][0]["code"] == "NOT_FOUND"
    assert (await api.data(ME, key=partner.key))["me"]["party"]["name"] == "ParkSpace"


async def test_a_malformed_key_id_is_not_found(api, network):
    payload = (await api.data(REVOKE, {"id": "not-base64!"}, network.owner.key))["revokeApiKey"]
    assert payload["errors"] == [{"field": ["id"], "code": "NOT_FOUND"}]


async def test_a_key_revoked_while_another_process_still_trusts_it_issues_no_successor(rt, api, network):
    """A second gateway that verified the partner's key a moment ago (its key cache trusts it for a
    minute) is asked to issue a key with it after the revocation went through this one: the
    issuing transaction finds its key revoked, and neither a key nor a sub-partner's key appears."""
    from dataclasses import replace

    import httpx

    from app.auth import KeyCache
    from app.server.app import create_app
    from tests.conftest import Api

    partner = await network.onboard("Partner")
    trusting = create_app(rt=replace(rt, settings=rt.settings.model_copy(update={"auth_cache_seconds": 60}), keys=KeyCache(60)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=trusting), base_url="http://other.test") as client:
        other = Api(client)
        assert (await other.data(ME, key=partner.key))["me"]["party"]["name"] == "Partner"  # now in its cache
        [key] = (await api.data(KEYS, {"id": partner.id}, network.owner.key))["party"]["apiKeys"]
        assert (await api.data(REVOKE, {"id": key["id"]}, network.owner.key))["revokeApiKey"]["errors"] == []

        payload = (await other.data(ISSUE, {"party": partner.id}, partner.key))["issueApiKey"]
        assert payload["apiKey"] is None and payload["errors"] == [{"field": None, "code": "UNAUTHENTICATED"}]
        onboarded = await other.post(
            "mutation { onboardPartner(input: {name: \"Sub\", kind: PARTNER, issueApiKey: true}) { apiKey errors { code } } }",
            key=partner.key,
        )
        assert onboarded["data"]["onboardPartner"]["apiKey"] is None
        assert [e["code"] for e in onboarded["data"]["onboardPartner"]["errors"]] == ["UNAUTHENTICATED"]
    keys = (await api.data(KEYS, {"id": partner.id}, network.owner.key))["party"]["apiKeys"]
    assert [k["revokedAt"] is None for k in keys] == [False]

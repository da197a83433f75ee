"""Onboarding providers and partners, with their agreements and a key, all or nothing."""

from dataclasses import dataclass

from app.auth import Principal
from app.sqlite import write_turn
from app.errors import AccessDenied
from app.runtime import Runtime
from app.services import validate
from app.services.agreements import AgreementDraft, add_agreements
from app.services.api_keys import minted
from models import Agreement, Network, Party


@dataclass(frozen=True)
class Onboarded:
    party: Party
    agreements: list[Agreement]
    api_key: str | None


async def onboard_partner(
    rt: Runtime,
    principal: Principal,
    *,
    name: str,
    kind: str,
    external_ref: str | None,
    agreements: list[AgreementDraft],
    issue_api_key: bool,
) -> Onboarded:
    """The owner onboards anyone; a provider or partner onboards its own sub-partners, paying them
    only out of its own income."""
    if principal.network_id is None or principal.kind not in ("OWNER", "PROVIDER", "PARTNER"):
        raise AccessDenied("only the owner, a provider or a partner may onboard partners")
    values: dict[str, str | None] = {}
    validate.collect(
        lambda: values.__setitem__("name", validate.name(name, "input", "name")),
        lambda: values.__setitem__("ref", validate.reference(external_ref, "input", "externalRef")),
        lambda: validate.one_of(kind, ("PROVIDER", "PARTNER"), "input", "kind"),
    )
    async with rt.sessions() as session, write_turn(session):
        network = await session.get(Network, principal.network_id)
        party = Party(network_id=network.id, kind=kind, name=values["name"], external_ref=values["ref"])
        session.add(party)
        await session.flush()
        created = await add_agreements(
            session, rt, principal, network, agreements, ("input", "agreements"), default_payee=party
        )
        issued = None
        if issue_api_key:
            issued = await minted(session, principal, party)
            session.add(issued.key)
        await session.commit()
    return Onboarded(party, created, None if issued is None else issued.secret)

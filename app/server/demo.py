"""The demo network: the shared-mobility example of DESIGN §5, built through the use-cases."""

from decimal import Decimal

from app.auth import OPERATOR, Principal
from app.billing.pricing import Charge, ChargeModel
from app.billing.waterfall import ShareKind
from app.runtime import Runtime
from app.services import catalog, networks, parties
from app.services.agreements import AgreementDraft, RuleDraft, add_agreement

D = Decimal


async def seed(rt: Runtime) -> dict[str, str]:
    """Create the demo network; returns each demo party's name and its API key (shown once)."""
    created = await networks.create_network(
        rt, OPERATOR, name="Shared Mobility Demo", currency="EUR", owner_name="MobilityHub", time_zone="Europe/Berlin"
    )
    owner = Principal(created.network.id, created.owner.id, "OWNER")
    keys = {"MobilityHub": created.owner_key}

    async def onboard(name: str, kind: str, by: Principal = owner):
        done = await parties.onboard_partner(
            rt, by, name=name, kind=kind, external_ref=None, agreements=[], issue_api_key=True
        )
        keys[name] = done.api_key
        return done.party

    citycar = await onboard("CityCar", "PROVIDER")
    scooters = await onboard("ScootCity", "PROVIDER")
    fleetcare = await onboard("FleetCare", "PARTNER")
    parkspace = await onboard("ParkSpace", "PARTNER")
    helpdesk = await onboard("HelpDesk24", "PARTNER")
    callcenter = await onboard("CallCenter Nord", "PARTNER")

    car_sharing, _ = await catalog.create_service(
        rt,
        owner,
        name="Car sharing",
        provider_id=citycar.id,
        billed_by_id=None,
        currency=None,
        charges=[
            Charge(metric="minutes", model=ChargeModel.PER_UNIT, unit_price=D("0.29")),
            Charge(metric="rental", model=ChargeModel.FLAT, unit_price=D("1.00")),
        ],
    )
    scooter_sharing, _ = await catalog.create_service(
        rt,
        owner,
        name="E-scooter sharing",
        provider_id=scooters.id,
        billed_by_id=None,
        currency=None,
        charges=[
            Charge(metric="minutes", model=ChargeModel.PER_UNIT, unit_price=D("0.19")),
            Charge(metric="unlock", model=ChargeModel.FLAT, unit_price=D("1.00")),
        ],
    )

    hub = created.owner
    terms = [
        (hub, helpdesk, car_sharing, RuleDraft(ShareKind.PERCENT, percent=D("2"))),
        (hub, parkspace, car_sharing, RuleDraft(ShareKind.PER_UNIT, amount=D("0.02"), metric="minutes")),
        (hub, citycar, car_sharing, RuleDraft(ShareKind.PERCENT, percent=D("85"))),
        (citycar, fleetcare, car_sharing, RuleDraft(ShareKind.PER_EVENT, amount=D("0.50"), metric="rental")),
        (helpdesk, callcenter, car_sharing, RuleDraft(ShareKind.PERCENT, percent=D("40"))),
        (hub, helpdesk, scooter_sharing, RuleDraft(ShareKind.PERCENT, percent=D("2"))),
        (hub, scooters, scooter_sharing, RuleDraft(ShareKind.PERCENT, percent=D("80"))),
    ]
    # The owner draws the chains: a payer names as payee only a party it can see (DESIGN §7), and
    # FleetCare and CallCenter Nord are in no chain of their payers' before these agreements.
    for payer, payee, service, rule in terms:
        draft = AgreementDraft(service_id=service.id, payer_id=payer.id, payee_id=payee.id, rule=rule)
        await add_agreement(rt, owner, draft)
    return keys

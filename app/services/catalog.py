"""Services and their price plans, versioned by period like agreements."""

from decimal import Decimal

from sqlalchemy import delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import Principal
from app.billing.pricing import Charge, ChargeModel, Tier, validate_charges
from app.errors import AccessDenied, DomainError, Problem, not_found
from app.runtime import Runtime
from app.services import periods, validate
from app.services.access import visible_services
from models import Network, Party, PricePlan, Service

_DECIMAL_FIELDS = {
    "unit_price": "unitPrice",
    "package_size": "packageSize",
    "package_price": "packagePrice",
    "free_units": "freeUnits",
    "rate_percent": "ratePercent",
    "fixed_fee": "fixedFee",
    "min_per_event": "minPerEvent",
    "max_per_event": "maxPerEvent",
}


def charge_to_json(charge: Charge) -> dict:
    """A charge as stored: decimals as canonical strings, never floats."""
    doc: dict = {"metric": charge.metric, "model": charge.model.value}
    for attr, key in _DECIMAL_FIELDS.items():
        value = getattr(charge, attr)
        if value is not None:
            doc[key] = format(value, "f")
    if charge.tiers:
        doc["tiers"] = [
            {
                "upTo": None if t.up_to is None else format(t.up_to, "f"),
                "unitPrice": format(t.unit_price, "f"),
                "flatFee": format(t.flat_fee, "f"),
            }
            for t in charge.tiers
        ]
    return doc


def charge_from_json(doc: dict) -> Charge:
    values = {attr: Decimal(doc[key]) for attr, key in _DECIMAL_FIELDS.items() if doc.get(key) is not None}
    tiers = tuple(
        Tier(
            up_to=None if t["upTo"] is None else Decimal(t["upTo"]),
            unit_price=Decimal(t["unitPrice"]),
            flat_fee=Decimal(t["flatFee"]),
        )
        for t in doc.get("tiers") or ()
    )
    return Charge(metric=doc["metric"], model=ChargeModel(doc["model"]), tiers=tiers, **values)


def check_charges(charges: list[Charge], *path: str) -> None:
    """Every problem of a plan, with its path below `path`."""
    problems = [Problem((*path, *p.path), p.code, p.message) for p in validate_charges(charges)]
    reported = {p.path for p in problems}
    for index, charge in enumerate(charges):
        for attr, key in _DECIMAL_FIELDS.items():
            value = getattr(charge, attr)
            at = (*path, str(index), key)
            # One problem per field: the billing core already refuses most non-finite values.
            if value is not None and not value.is_finite() and at not in reported:
                problems.append(Problem(at, "INVALID", "must be a finite number"))
    if problems:
        raise DomainError(*problems)


async def plans_for(session: AsyncSession, network_id: int, service_ids: list[int], period: str) -> dict[int, PricePlan]:
    """The plans in force in a period, by service id; one statement for any number of services."""
    rows = await session.scalars(
        select(PricePlan).where(
            PricePlan.network_id == network_id,
            PricePlan.service_id.in_(service_ids),
            PricePlan.effective_from <= period,
            or_(PricePlan.effective_to.is_(None), PricePlan.effective_to > period),
        )
    )
    return {plan.service_id: plan for plan in rows}


async def plan_for(session: AsyncSession, network_id: int, service_id: int, period: str) -> PricePlan | None:
    """The plan in force for a service in a period."""
    return (await plans_for(session, network_id, [service_id], period)).get(service_id)


def charges_of(plan: PricePlan | None) -> list[Charge]:
    return [charge_from_json(doc) for doc in plan.charges] if plan else []


async def _party_in(session: AsyncSession, network_id: int, party_id: int, kinds: set[str], *path: str) -> Party:
    party = await session.get(Party, party_id)
    if party is None or party.network_id != network_id:
        raise not_found("party", *path)
    if party.kind not in kinds:
        raise DomainError.of("INVALID", f"must be a party of kind {' or '.join(sorted(kinds))}", *path)
    return party


async def create_service(
    rt: Runtime,
    principal: Principal,
    *,
    name: str,
    provider_id: int,
    billed_by_id: int | None,
    currency: str | None,
    charges: list[Charge],
) -> tuple[Service, PricePlan]:
    """The owner creates a service; its first plan is in force from the network's first period."""
    if not principal.is_owner:
        raise AccessDenied("only the network's owner may create services")
    async with rt.sessions.begin() as session:
        network = await session.get(Network, principal.network_id)
        code = currency or network.currency
        values: dict[str, str] = {}
        validate.collect(
            lambda: values.__setitem__("name", validate.name(name, "input", "name")),
            lambda: validate.currency(code, "input", "currency"),
            lambda: check_charges(charges, "input", "charges"),
        )
        provider = await _party_in(session, network.id, provider_id, {"PROVIDER"}, "input", "providerId")
        billed_by_id = billed_by_id or (
            await session.scalar(select(Party.id).where(Party.network_id == network.id, Party.kind == "OWNER"))
        )
        await _party_in(session, network.id, billed_by_id, {"OWNER", "PARTNER", "PROVIDER"}, "input", "billedById")
        service = Service(
            network_id=network.id, name=values["name"], currency=code, provider_id=provider.id, billed_by_id=billed_by_id
        )
        session.add(service)
        await session.flush()
        plan = PricePlan(
            network_id=network.id,
            service_id=service.id,
            effective_from=network.first_period,
            charges=[charge_to_json(c) for c in charges],
        )
        session.add(plan)
    return service, plan


async def change_price_plan(
    rt: Runtime, principal: Principal, *, service_id: int, charges: list[Charge], effective_from: str | None
) -> Service:
    """A new plan from a period boundary on; plans that started at or after it are superseded."""
    async with rt.sessions.begin() as session:
        service = await session.scalar(select(Service).where(Service.id == service_id, visible_services(principal)))
        if service is None:
            raise not_found("service", "input", "serviceId")
        if not (principal.is_owner or principal.party_id == service.billed_by_id):
            raise AccessDenied("only the owner or the service's billing party may change its price plan")
        network = await session.get(Network, service.network_id)
        start = periods.resolve(network, effective_from, rt.now(), "input", "effectiveFrom")
        check_charges(charges, "input", "charges")
        await periods.require_changeable(session, network, start, "input", "effectiveFrom")
        in_force = await plan_for(session, network.id, service.id, start)
        await session.execute(
            delete(PricePlan).where(
                PricePlan.network_id == network.id,
                PricePlan.service_id == service.id,
                PricePlan.effective_from >= start,
            )
        )
        if in_force is not None and in_force.effective_from < start:
            in_force.effective_to = start
        session.add(
            PricePlan(
                network_id=network.id,
                service_id=service.id,
                effective_from=start,
                charges=[charge_to_json(c) for c in charges],
            )
        )
    return service



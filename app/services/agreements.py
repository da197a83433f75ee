"""Agreements: the edges of a value chain, in force for [effective_from, effective_to) periods."""

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import Principal
from app.billing.money import currency_exponent
from app.billing.waterfall import Leg, ShareBase, ShareKind, closes_cycle, validate_leg
from app.errors import DomainError, Problem, not_found
from app.runtime import Runtime
from app.services import catalog, periods
from app.services.access import visible_agreements, visible_parties, visible_services
from models import Agreement, Network, Party, Service


@dataclass(frozen=True)
class RuleDraft:
    kind: ShareKind
    percent: Decimal | None = None
    amount: Decimal | None = None
    metric: str | None = None
    base: ShareBase | None = None
    weight: Decimal | None = None
    priority: int | None = None
    min: Decimal | None = None
    max: Decimal | None = None


@dataclass(frozen=True)
class AgreementDraft:
    """An agreement as the caller asked for it; ids already decoded, defaults not yet applied."""

    service_id: int
    rule: RuleDraft
    payer_id: int | None = None
    payee_id: int | None = None
    effective_from: str | None = None


def in_force(period: str):
    """Agreements whose [effective_from, effective_to) contains the period."""
    return (Agreement.effective_from <= period) & or_(
        Agreement.effective_to.is_(None), Agreement.effective_to > period
    )


def leg_of(agreement: Agreement) -> Leg:
    """The billing core's view of an agreement; the id orders equal priorities (older first)."""
    return Leg(
        key=agreement.id,
        payer=agreement.payer_id,
        payee=agreement.payee_id,
        kind=ShareKind(agreement.kind),
        percent=agreement.percent,
        amount=agreement.amount,
        metric=agreement.metric,
        base=ShareBase(agreement.base or ShareBase.GROSS.value),
        weight=agreement.weight,
        priority=agreement.priority,
        min=agreement.min,
        max=agreement.max,
        seq=agreement.id,
    )


async def agreements_in_force(session: AsyncSession, network_id: int, service_id: int, period: str) -> list[Agreement]:
    rows = await session.scalars(
        select(Agreement)
        .where(Agreement.network_id == network_id, Agreement.service_id == service_id, in_force(period))
        .order_by(Agreement.id)
    )
    return list(rows)


def _rule_problems(rule: RuleDraft, metrics: list[str], exponent: int, path: tuple[str, ...]) -> list[Problem]:
    leg = Leg(
        key=None,
        payer=None,
        payee=None,
        kind=rule.kind,
        percent=rule.percent,
        amount=rule.amount,
        metric=rule.metric,
        base=rule.base or ShareBase.GROSS,
        weight=rule.weight,
        priority=100 if rule.priority is None else rule.priority,
        min=rule.min,
        max=rule.max,
    )
    problems = [Problem((*path, *p.path), p.code, p.message) for p in validate_leg(leg, metrics, exponent)]
    extra = []
    if rule.base is not None and rule.kind != ShareKind.PERCENT:
        extra.append(Problem((*path, "base"), "INVALID", "a base applies to PERCENT rules only"))
    for field in ("percent", "amount", "weight", "min", "max"):
        value = getattr(rule, field)
        if value is not None and not value.is_finite():
            extra.append(Problem((*path, field), "INVALID", "must be a finite number"))
    if rule.priority is not None and not 0 <= rule.priority <= 1_000_000:
        extra.append(Problem((*path, "priority"), "INVALID", "must lie between 0 and 1000000"))
    # One problem per field: the billing core's comes first, these only fill what it does not check.
    reported = {p.path for p in problems}
    return problems + [p for p in extra if p.path not in reported]


async def add_agreements(
    session: AsyncSession,
    rt: Runtime,
    principal: Principal,
    network: Network,
    drafts: list[AgreementDraft],
    path: tuple[str, ...],
    default_payee: Party | None = None,
) -> list[Agreement]:
    """Validate and insert agreements in the caller's transaction; all or nothing.

    `path` leads to the list in the input; each problem's path continues with the draft's index.
    """
    created: list[Agreement] = []
    problems: list[Problem] = []
    for index, draft in enumerate(drafts):
        try:
            created.append(await _add_one(session, rt, principal, network, draft, (*path, str(index)), default_payee))
        except DomainError as error:
            problems.extend(error.problems)
    if problems:
        raise DomainError(*problems)
    return created


async def _add_one(
    session: AsyncSession,
    rt: Runtime,
    principal: Principal,
    network: Network,
    draft: AgreementDraft,
    at: tuple[str, ...],
    default_payee: Party | None,
) -> Agreement:
    service = await session.scalar(
        select(Service).where(Service.id == draft.service_id, visible_services(principal))
    )
    if service is None:
        raise not_found("service", *at, "serviceId")
    payer_id = draft.payer_id or principal.party_id
    if not principal.is_owner and payer_id != principal.party_id:
        raise DomainError.of(
            "FORBIDDEN_PAYER", "a party can give away only its own income: the payer must be the caller", *at, "payerId"
        )
    payer = await session.get(Party, payer_id)
    if payer is None or payer.network_id != network.id or payer.kind == "CONSUMER":
        raise not_found("payer", *at, "payerId")
    payee_id = draft.payee_id or (default_payee.id if default_payee else None)
    if payee_id is None:
        raise DomainError.of("INVALID", "a payee is required", *at, "payeeId")
    # Only a party the payer can see, or the one onboarded in this call: a guessed id finds nothing.
    payee = default_payee if default_payee and payee_id == default_payee.id else await session.scalar(
        select(Party).where(Party.id == payee_id, visible_parties(principal))
    )
    if payee is None or payee.kind in ("CONSUMER", "OWNER"):
        raise not_found("payee", *at, "payeeId")
    start = periods.resolve(network, draft.effective_from, rt.now(), *at, "effectiveFrom")
    await periods.require_changeable(session, network, start, *at, "effectiveFrom")
    plan = await catalog.plan_for(session, network.id, service.id, start)
    metrics = [c.metric for c in catalog.charges_of(plan)]
    problems = _rule_problems(draft.rule, metrics, currency_exponent(service.currency), (*at, "rule"))
    if problems:
        raise DomainError(*problems)
    overlapping = await session.execute(
        select(Agreement.payer_id, Agreement.payee_id).where(
            Agreement.network_id == network.id,
            Agreement.service_id == service.id,
            or_(Agreement.effective_to.is_(None), Agreement.effective_to > start),
        )
    )
    if closes_cycle([tuple(row) for row in overlapping], (payer.id, payee.id)):
        raise DomainError.of(
            "AGREEMENT_CYCLE", f"{payee.name} already pays {payer.name}, directly or through others", *at, "payeeId"
        )
    rule = draft.rule
    agreement = Agreement(
        network_id=network.id,
        service_id=service.id,
        payer_id=payer.id,
        payee_id=payee.id,
        kind=rule.kind.value,
        percent=rule.percent,
        amount=rule.amount,
        metric=rule.metric,
        base=(rule.base or ShareBase.GROSS).value if rule.kind == ShareKind.PERCENT else None,
        weight=rule.weight,
        priority=100 if rule.priority is None else rule.priority,
        min=rule.min,
        max=rule.max,
        effective_from=start,
    )
    session.add(agreement)
    await session.flush()
    return agreement


async def add_agreement(rt: Runtime, principal: Principal, draft: AgreementDraft) -> Agreement:
    async with rt.sessions.begin() as session:
        network = await session.get(Network, principal.network_id)
        agreement = await _add_one(session, rt, principal, network, draft, ("input",), None)
    return agreement


async def end_agreement(rt: Runtime, principal: Principal, agreement_id: int, effective_to: str) -> Agreement:
    """End an agreement at a period boundary; only its payer or the owner may, never in a closed period."""
    async with rt.sessions.begin() as session:
        agreement = await session.scalar(
            select(Agreement).where(Agreement.id == agreement_id, visible_agreements(principal))
        )
        if agreement is None:
            raise not_found("agreement", "input", "agreementId")
        if not (principal.is_owner or principal.party_id == agreement.payer_id):
            raise DomainError.of("FORBIDDEN_PAYER", "only the payer or the owner may end an agreement", "input", "agreementId")
        network = await session.get(Network, agreement.network_id)
        end = periods.parse_key(effective_to, "input", "effectiveTo")
        if end <= agreement.effective_from:
            raise DomainError.of("INVALID", f"must lie after {agreement.effective_from}", "input", "effectiveTo")
        await periods.require_changeable(session, network, end, "input", "effectiveTo")
        if agreement.effective_to is not None:
            await periods.require_changeable(session, network, agreement.effective_to, "input", "effectiveTo")
            if end > agreement.effective_to:
                await _refuse_cycle_when_extended(session, agreement, agreement.effective_to, end)
        agreement.effective_to = end
    return agreement


async def _refuse_cycle_when_extended(session: AsyncSession, agreement: Agreement, old_end: str, new_end: str) -> None:
    """Moving an end later puts the agreement into periods [old_end, new_end) it was not in: the
    agreements there may already pay its payer from its payee (added once this one had ended)."""
    overlapping = await session.execute(
        select(Agreement.payer_id, Agreement.payee_id).where(
            Agreement.network_id == agreement.network_id,
            Agreement.service_id == agreement.service_id,
            Agreement.id != agreement.id,
            Agreement.effective_from < new_end,
            or_(Agreement.effective_to.is_(None), Agreement.effective_to > old_end),
        )
    )
    if closes_cycle([tuple(row) for row in overlapping], (agreement.payer_id, agreement.payee_id)):
        raise DomainError.of(
            "AGREEMENT_CYCLE",
            f"from {old_end} on, the payee already pays the payer, directly or through others",
            "input",
            "effectiveTo",
        )

"""Quote: price and split one consumer's hypothetical usage, writing nothing."""

from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select

from app.auth import Principal
from app.billing.money import RoundingMode, currency_exponent
from app.billing.pricing import price_line, usage_of
from app.billing.waterfall import FlowOverflow, MetricUsage, split_service
from app.errors import DomainError, Problem, not_found
from app.runtime import Runtime
from app.services import catalog, periods, text
from app.services.access import visible_services
from app.services.agreements import agreements_in_force, leg_of
from app.services.flows import too_large
from app.ingest.items import check_quantity
from app.ingest.record import MAX_BATCH
from models import Network, Service


@dataclass(frozen=True)
class PricedLine:
    metric: str
    quantity: Decimal
    events: int
    amount: int
    "Minor units of the service's currency."


@dataclass(frozen=True)
class Quote:
    service: Service
    period: str
    currency: str
    total: int
    lines: list[PricedLine]
    flows: list[tuple[int, int, int]]
    "(payer id, payee id, minor units), only those the caller may see."
    retained: list[tuple[int, int]]
    "(party id, minor units), only those the caller may see."


async def quote(
    rt: Runtime, principal: Principal, service_id: int, usage: list[tuple[str, Decimal]], period: str | None
) -> Quote:
    """As if these events were the service's only usage in the period, under that period's plan and
    agreements. A partner sees only the flows it pays or receives and only its own retained amount.
    At most MAX_BATCH items, as for recordUsage: a quote prices them on the event loop."""
    if len(usage) > MAX_BATCH:
        raise DomainError.of("BATCH_TOO_LARGE", f"at most {MAX_BATCH} usage items per quote", "usage")
    async with rt.sessions.begin() as session:
        service = await session.scalar(select(Service).where(Service.id == service_id, visible_services(principal)))
        if service is None:
            raise not_found("service", "serviceId")
        network = await session.get(Network, service.network_id)
        key = periods.resolve(network, period, rt.now(), "period")
        if key < network.first_period:
            # No plan exists before the first period: say so, rather than that no metric is charged.
            raise DomainError.of(
                "BEFORE_FIRST_PERIOD", f"{key} lies before the network's first period {network.first_period}", "period"
            )
        plan = await catalog.plan_for(session, network.id, service.id, key)
        charges = {c.metric: c for c in catalog.charges_of(plan)}
        problems: list[Problem] = []
        quantities: dict[str, list[Decimal]] = {}
        for index, (metric, quantity) in enumerate(usage):
            at = ("usage", str(index))
            if (message := text.problem(metric, text.METRIC)) is not None:
                problems.append(Problem((*at, "metric"), "INVALID", message))
            elif metric not in charges:
                problems.append(Problem((*at, "metric"), "UNKNOWN_METRIC", f"the service does not charge {metric!r}"))
            try:
                quantities.setdefault(metric, []).append(check_quantity(quantity, *at, "quantity"))
            except DomainError as error:
                problems.extend(error.problems)
        if not usage:
            problems.append(Problem(("usage",), "INVALID", "at least one usage event is needed"))
        if problems:
            raise DomainError(*problems)
        agreements = await agreements_in_force(session, network.id, service.id, key)

    exponent = currency_exponent(service.currency)
    mode = RoundingMode(network.rounding_mode)
    lines = []
    for metric, values in quantities.items():
        line_usage = usage_of(charges[metric], values)
        lines.append(
            PricedLine(metric, sum(values, Decimal(0)), len(values), price_line(charges[metric], line_usage, exponent, mode))
        )
    total = sum(line.amount for line in lines)
    try:
        split = split_service(
            service.billed_by_id,
            total,
            [leg_of(a) for a in agreements],
            {line.metric: MetricUsage(line.quantity, line.events) for line in lines},
            exponent,
            mode,
        )
    except FlowOverflow as overflow:
        raise too_large(overflow, service.id, key, "usage") from None
    sees_all = principal.is_owner
    me = principal.party_id
    flows = [
        (payer, payee, amount)
        for (payer, payee), amount in split.flows.items()
        if sees_all or me in (payer, payee)
    ]
    retained = [(party, amount) for party, amount in split.retained.items() if sees_all or party == me]
    return Quote(service, key, service.currency, total, lines, flows, retained)

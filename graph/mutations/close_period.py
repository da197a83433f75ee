import strawberry

from app.errors import DomainError
from app.observability import PERIOD_CLOSES
from app.services import closing
from graph.context import Info
from graph.errors import UserError, user_errors
from graph.types import SettlementPeriod


@strawberry.type
class ClosePeriodPayload:
    period: SettlementPeriod | None = None
    statement_count: int = strawberry.field(
        default=0, description="How many final statements the close issued (query them with statements)."
    )
    errors: list[UserError] = strawberry.field(default_factory=list)


async def close_period(info: Info, period: str) -> ClosePeriodPayload:
    principal = info.context.party_principal()
    try:
        key, count = await closing.close_period(info.context.rt, principal, period)
    except DomainError as error:
        return ClosePeriodPayload(errors=user_errors(error))
    PERIOD_CLOSES.inc()
    network = await info.context.loaders.network_by_id.load(principal.network_id)
    return ClosePeriodPayload(period=SettlementPeriod.of(key, network.time_zone, closed=True), statement_count=count)



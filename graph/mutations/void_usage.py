import strawberry

from app.errors import DomainError
from app.services import usage
from graph.context import Info
from graph.errors import UserError, user_errors
from graph.usage import UsageEvent


@strawberry.type
class VoidUsagePayload:
    event: UsageEvent | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


async def void_usage(info: Info, idempotency_key: str) -> VoidUsagePayload:
    principal = info.context.party_principal()
    try:
        event = await usage.void_usage(info.context.rt, principal, idempotency_key)
    except DomainError as error:
        return VoidUsagePayload(errors=user_errors(error))
    return VoidUsagePayload(event=UsageEvent(row=event))

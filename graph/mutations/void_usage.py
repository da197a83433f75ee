from typing import Annotated

import strawberry

from app.errors import DomainError
from app.ingest import void
from graph.context import Info
from graph.errors import UserError, user_errors
from graph.ids import decode_optional
from graph.usage import UsageEvent


@strawberry.type
class VoidUsagePayload:
    event: UsageEvent | None = None
    errors: list[UserError] = strawberry.field(default_factory=list)


async def void_usage(
    info: Info,
    idempotency_key: str,
    service_id: Annotated[
        strawberry.ID | None,
        strawberry.argument(description="The event's service; without it, the key is searched on every service "
                            "the caller records usage on and must name one event (AMBIGUOUS_IDEMPOTENCY_KEY otherwise)."),
    ] = None,
) -> VoidUsagePayload:
    principal = info.context.party_principal()
    try:
        service = decode_optional(service_id, "Service", "serviceId")
        event = await void.void_usage(info.context.rt, principal, idempotency_key, service)
    except DomainError as error:
        return VoidUsagePayload(errors=user_errors(error))
    return VoidUsagePayload(event=UsageEvent(row=event))

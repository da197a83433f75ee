import strawberry
from collections.abc import Awaitable
from datetime import datetime
from decimal import Decimal
from enum import Enum

from graphql import GraphQLResolveInfo

from app.errors import DomainError
from app.ingest import record
from app.ingest.items import item_from_row
from app.ingest.results import ItemResult
from app.observability import USAGE_EVENTS
from graph.context import Info
from graph.errors import UserError, user_errors
from graph.ids import service_row_id
from graph.usage import UsageEvent


@strawberry.enum
class UsageStatus(Enum):
    ACCEPTED = "ACCEPTED"
    DUPLICATE = "DUPLICATE"
    REJECTED = "REJECTED"


_STATUS = {status.value: status for status in UsageStatus}
"UsageStatus by value: a look-up, where calling the enum costs a microsecond per item."


@strawberry.input
class UsageInput:
    idempotency_key: str
    service_id: strawberry.ID
    consumer_ref: str = strawberry.field(description="The consumer's external reference; an unknown one creates the consumer.")
    metric: str
    quantity: Decimal
    occurred_at: datetime


def _event(root: "UsageResult") -> UsageEvent | None:
    """UsageResult.event, made when asked for: a batch's answer often selects only statuses."""
    event = root.result.event if root.result is not None else None
    return UsageEvent(row=event) if event is not None else None


@strawberry.type
class UsageResult:
    index: int
    status: UsageStatus
    event: UsageEvent | None = strawberry.field(resolver=_event)
    errors: list[UserError] = strawberry.field(default_factory=list)
    result: strawberry.Private[ItemResult | None] = None


@strawberry.type
class RecordUsagePayload:
    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    results: list[UsageResult] = strawberry.field(default_factory=list)
    errors: list[UserError] = strawberry.field(default_factory=list, description="Errors about the batch as a whole.")


async def record_usage(info: Info, events: list[UsageInput]) -> RecordUsagePayload:
    """The field as the schema declares it. It runs through resolve_coerced, which hands it the
    events as app.ingest.items.UsageItem values and graphql-core's own `info` (the context is the same)."""
    principal = info.context.party_principal()
    if len(events) > record.MAX_BATCH:
        USAGE_EVENTS.labels(status="REJECTED").inc(len(events))
        return RecordUsagePayload(
            rejected=len(events),
            errors=[UserError(field=["events"], code="BATCH_TOO_LARGE", message=f"at most {record.MAX_BATCH} events per batch")],
        )
    try:
        recorded = await record.record_usage(info.context.rt, principal, events)
    except DomainError as error:
        USAGE_EVENTS.labels(status="REJECTED").inc(len(events))
        return RecordUsagePayload(rejected=len(events), errors=user_errors(error))
    counts = recorded.counts()
    for status, count in counts.items():
        USAGE_EVENTS.labels(status=status).inc(count)
    return RecordUsagePayload(
        accepted=counts["ACCEPTED"],
        duplicates=counts["DUPLICATE"],
        rejected=counts["REJECTED"],
        results=[
            UsageResult(
                index=index,
                status=_STATUS[result.status],
                result=result,
                errors=user_errors(DomainError(*result.problems)) if result.problems else [],
            )
            for index, result in enumerate(recorded.results)
        ],
    )


def resolve_coerced(_root, info: GraphQLResolveInfo, events: list[dict]) -> Awaitable[RecordUsagePayload]:
    """recordUsage's resolver in the executable schema (graph.schema): the events as graphql-core
    coerced them (keyed by the GraphQL field names, quantity and occurredAt already a Decimal and
    a datetime) go to the use-case's items through the conversion the NDJSON endpoint and the
    importer use too. Strawberry's own conversion walks each item through its generic dispatch
    first, about 6 µs per event (a seventh of the server's time per event), for a field whose
    resolver has no permission classes, extensions or handlers for it to apply."""
    return record_usage(info, [item_from_row(event, service_row_id) for event in events])

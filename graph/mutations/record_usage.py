import strawberry
from datetime import datetime
from decimal import Decimal
from enum import Enum

from graphql import GraphQLResolveInfo

from app.errors import DomainError
from app.ingest import record
from app.ingest.items import UsageItem, item_from_row
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
    """The field as the schema declares it: strawberry's UsageInput values go to the use-case's
    items through the conversion the NDJSON endpoint and the importer use too. With the engine
    overrides on, graph/engine/coerced_events.py calls record_items instead, without strawberry's
    conversion."""
    return await record_items(info, [item_from_row(_row(event), service_row_id) for event in events])


def _row(event: UsageInput) -> dict:
    """An event keyed by its GraphQL field names, as app.ingest.items.item_from_row reads it."""
    return {
        "idempotencyKey": event.idempotency_key, "serviceId": event.service_id, "consumerRef": event.consumer_ref,
        "metric": event.metric, "quantity": event.quantity, "occurredAt": event.occurred_at,
    }


async def record_items(info: Info | GraphQLResolveInfo, events: list[UsageItem]) -> RecordUsagePayload:
    """The batch recorded; only `info.context` is read."""
    principal = info.context.party_principal()
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

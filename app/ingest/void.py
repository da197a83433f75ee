"""Voiding a usage event: it stops counting, its totals follow at once."""

from sqlalchemy import select

from app.auth import Principal
from app.billing.running_totals import Change
from app.errors import DomainError, not_found
from app.ingest.context import Context
from app.ingest.totals import apply_changes, correct_closed
from app.runtime import Runtime
from app.services import events, periods, text
from app.services.access import recordable_services
from app.sqlite import write_turn
from models import Network, Service, UsageEvent
from models.types import utcnow

async def void_usage(rt: Runtime, principal: Principal, idempotency_key: str, service_id: int | None = None) -> UsageEvent:
    """The event stops counting; its line, the service's usage and revenue follow at once.

    A key is unique within its service: the event is searched on `service_id`, or without it on
    every service the principal records on, where the key must name one event only."""
    text.check(idempotency_key, text.IDEMPOTENCY_KEY, "idempotencyKey")
    on_service = () if service_id is None else (UsageEvent.service_id == service_id,)
    async with rt.sessions() as session, write_turn(session):
        found = list(await session.scalars(
            select(UsageEvent)
            .where(UsageEvent.network_id == principal.network_id, UsageEvent.idempotency_key == idempotency_key,
                   UsageEvent.service_id.in_(select(Service.id).where(recordable_services(principal))), *on_service)
            .order_by(UsageEvent.id)
            .limit(2)
            .with_for_update()
        ))
        if not found:
            raise not_found("usage event", "idempotencyKey")
        if len(found) > 1:
            raise DomainError.of(
                "AMBIGUOUS_IDEMPOTENCY_KEY", "the key names events of several services: give the serviceId", "serviceId"
            )
        event = found[0]
        service = await session.get(Service, event.service_id)
        if event.voided_at is not None:
            raise DomainError.of("ALREADY_VOIDED", "the event was voided already", "idempotencyKey")
        network = await session.get(Network, event.network_id)
        event.voided_at = utcnow()
        ctx = Context(network, {service.id: service})
        ctx.closed = await periods.closed_keys(session, network.id)
        await ctx.load(await session.connection(), {(service.id, event.period)})
        await apply_changes(session, ctx, [Change(event.period, event.service_id, event.consumer_id, event.metric, event.quantity, -1)])
        await correct_closed(session, ctx, [event])
        await session.commit()
    await events.usage_changed(rt, principal.network_id, [event])
    return event

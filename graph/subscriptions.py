"""Live subscriptions over WebSocket: `settlementUpdated` and `statementFinalized`.

The use-cases publish *what* changed after their commit (app/services/events.py): a network's
services and periods, or the period closed. Each subscription listens on its network's channel and
computes its own message with its subscriber's principal and the same access rules as queries
(app.services.settlement.statement): payloads carry what the subscriber may see, nothing more.
Subscribers that would compute the same thing from the same message (same party, same access)
share one computation (`pubsub.Event.memo`), so a thousand subscribers of one party cost one
statement per change, not a thousand.

A socket authenticates once, in `connection_init` (`{"authorization": "Bearer <key>"}`); every
subscription checks the key again on each message and every `REVALIDATE_SECONDS` while quiet (through
the key cache: a revocation made through another process shows within its TTL), and ends with
UNAUTHENTICATED once the key no longer works.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import strawberry
from graphql import GraphQLError
from sqlalchemy import select
from strawberry.exceptions import ConnectionRejectionError
from strawberry.types.unset import UNSET

from app.auth import Caller, Principal, identify
from app.errors import DomainError
from app.observability import SUBSCRIPTIONS
from app.pubsub import Event, Subscriber, channel_for
from app.services import events, settlement
from app.services.access import visible_parties
from graph.context import Context, Info
from graph.errors import coded
from graph.ids import decode_optional
from graph.loaders import Loaders
from graph.statements import Statement
from graph.types import Money, Party
from models import Party as PartyRow

log = logging.getLogger("shareflow.subscriptions")

MAX_SUBSCRIPTIONS_PER_CONNECTION = 20
"Operations one socket may have running at once (strawberry refuses more)."
REVALIDATE_SECONDS = 5.0
"How often a quiet subscription checks its key again (each message checks it too)."

_LOADERS: contextvars.ContextVar[tuple[SocketContext, Loaders] | None] = contextvars.ContextVar(
    "shareflow_socket_loaders", default=None
)


@dataclass(eq=False)
class SocketContext(Context):
    """The context of one WebSocket: strawberry makes it once per socket and hands it to every
    operation on it, so the loaders (whose caches would go stale) are made per operation, and per
    message of a subscription, in a context variable of the operation's task."""

    connection_params: dict[str, Any] | None = None
    authorization: str | None = None
    _built: tuple[Principal, Loaders] | None = field(default=None, repr=False)

    @property
    def loaders(self) -> Loaders:
        current = _LOADERS.get()
        if current is None or current[0] is not self:
            current = (self, self._fresh_loaders())
            _LOADERS.set(current)
        return current[1]

    def fresh_loaders(self) -> None:
        """Empty loaders for what runs next in this task (the next message of a subscription)."""
        _LOADERS.set(None)

    def _fresh_loaders(self) -> Loaders:
        principal = self.party_principal()
        if self._built is None or self._built[0] != principal:
            self._built = (principal, Loaders.build(self.rt, principal))
        loaders = self._built[1].fresh()
        if self.caller is not None:
            loaders.prime_caller(self.caller.party, self.caller.network)
        return loaders


def socket_context(rt, websocket, response) -> SocketContext:
    """The context strawberry keeps for a socket; the caller is known after `connection_init`."""
    return SocketContext(rt=rt, principal=None, request=websocket, response=response)


async def on_connect(context: SocketContext):
    """`connection_init`: the payload must carry a working key, else the socket is closed (4403
    with graphql-transport-ws)."""
    params = context.connection_params or {}
    authorization = params.get("authorization", params.get("Authorization"))
    if not isinstance(authorization, str) or not authorization:
        raise ConnectionRejectionError({"code": "UNAUTHENTICATED", "message": "connection_init needs an authorization"})
    rt = context.rt
    caller = await identify(rt.sessions, authorization, rt.settings.operator_key, rt.keys)
    if caller is None:
        raise ConnectionRejectionError({"code": "UNAUTHENTICATED", "message": "the API key is missing, unknown or revoked"})
    context.authorization = authorization
    context.caller = caller
    context.principal = caller.principal
    return UNSET  # a plain connection_ack


async def _revalidate(context: SocketContext) -> Caller:
    """The socket's key checked again; raises UNAUTHENTICATED once it no longer works."""
    rt = context.rt
    caller = None
    if context.authorization is not None:
        caller = await identify(rt.sessions, context.authorization, rt.settings.operator_key, rt.keys)
    if caller is None:
        context.principal = None
        context.caller = None
        raise coded("UNAUTHENTICATED", "the API key was revoked or no longer works")
    if caller is not context.caller:
        context.caller = caller
        context.principal = caller.principal
    return caller


def _principal(info: Info) -> SocketContext:
    context = info.context
    if not isinstance(context, SocketContext):
        raise coded("INVALID", "subscriptions are served over WebSocket")
    context.party_principal()  # UNAUTHENTICATED, or FORBIDDEN for the operator key
    return context


async def _watched_party(context: SocketContext, party_id: strawberry.ID | None) -> int:
    """The party a subscription may watch: itself for any party, any party of its network for the
    owner. Another party the caller sees is FORBIDDEN; one it may not see does not exist for it."""
    principal = context.party_principal()
    try:
        wanted = decode_optional(party_id, "Party", "partyId")
    except DomainError:
        raise coded("NOT_FOUND", "party not found") from None
    if wanted is None or wanted == principal.party_id:
        return principal.party_id
    async with context.rt.sessions() as session:
        if principal.is_owner:
            found = await session.scalar(
                select(PartyRow.id).where(PartyRow.id == wanted, PartyRow.network_id == principal.network_id)
            )
            if found is None:
                raise coded("NOT_FOUND", "party not found")
            return found
        visible = await session.scalar(select(PartyRow.id).where(PartyRow.id == wanted, visible_parties(principal)))
    if visible is not None:
        raise coded("FORBIDDEN", "a party may watch only its own settlement; the owner any party of its network")
    raise coded("NOT_FOUND", "party not found")


def _same_access(principal: Principal) -> Principal:
    """The principal without its key id: what access depends on, so that subscribers with
    different keys of the same party share a computation."""
    return dataclasses.replace(principal, key_id=None)


async def _shared(event: Event | None, key: tuple, compute: Callable[[], Awaitable[Any]]) -> Any:
    """`compute()` once per event and key, shared by every local subscriber that asks for it."""
    if event is None:
        return await compute()
    task = event.memo.get(key)
    if task is None:
        task = event.memo[key] = asyncio.ensure_future(compute())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
    return await asyncio.shield(task)


def _unexpected(context: Context, error: Exception) -> GraphQLError:
    log.error("unexpected error in a subscription, request %s", context.request_id, exc_info=error)
    return GraphQLError("Unexpected error.", extensions={"code": "INTERNAL", "requestId": context.request_id})


@strawberry.type
class SettlementUpdate:
    party: Party
    period: str
    currency: str
    receivable: Money
    payable: Money
    net: Money


@dataclass(frozen=True)
class _Totals:
    party: PartyRow = field(compare=False)
    period: str
    currency: str
    receivable: int
    payable: int
    net: int

    def update(self) -> SettlementUpdate:
        c = self.currency
        return SettlementUpdate(
            party=Party(row=self.party), period=self.period, currency=c,
            receivable=Money.of(self.receivable, c), payable=Money.of(self.payable, c), net=Money.of(self.net, c),
        )


async def _running_totals(rt, principal: Principal, party_id: int) -> _Totals | None:
    """The party's draft statement of the current period in the network's currency, as the
    principal may see it (None when it may not)."""
    value = await settlement.statement(rt, principal, party_id, None, None)
    if value is None:
        return None
    totals = value.totals
    return _Totals(value.party, value.period, value.currency, totals.receivable, totals.payable, totals.net)


@dataclass(frozen=True)
class _Batch:
    """What a subscriber takes from its inbox at once: the latest event (its memo is shared with
    the other subscribers that got it), the kinds of all of them and the periods they closed."""

    event: Event
    kinds: frozenset
    closed: tuple[str, ...]


@contextlib.asynccontextmanager
async def _inbox(context: SocketContext):
    """The network's channel, counted as an open subscription on /metrics while it is held."""
    with SUBSCRIPTIONS.track_inprogress():
        async with context.rt.pubsub.subscribe(channel_for(context.principal.network_id)) as inbox:
            yield inbox


async def _events(context: SocketContext, inbox: Subscriber) -> AsyncGenerator[_Batch | None, None]:
    """The channel's events as they come, the waiting ones taken together, the key checked again
    before each batch; None after a quiet `REVALIDATE_SECONDS`."""
    while True:
        event = await inbox.next(REVALIDATE_SECONDS)
        batch = None
        if event is not None:
            taken = [event, *inbox.pending()]
            batch = _Batch(
                taken[-1],
                frozenset(e.data.get("kind") for e in taken),
                tuple(e.data["period"] for e in taken if e.data.get("kind") == events.CLOSED),
            )
        await _revalidate(context)
        yield batch


async def _settlement_stream(context: SocketContext, party_id: int) -> AsyncGenerator[SettlementUpdate, None]:
    rt = context.rt
    async with _inbox(context) as inbox:
        last: _Totals | None = None
        batch: _Batch | None = None
        stream = _events(context, inbox)
        while True:
            if batch is None and last is not None:
                pass  # a quiet interval: only the key was checked
            elif batch is None or events.USAGE in batch.kinds:
                event = None if batch is None else batch.event
                principal = context.party_principal()
                try:
                    totals = await _shared(event, ("totals", _same_access(principal), party_id),
                                           lambda p=principal: _running_totals(rt, p, party_id))
                except (GraphQLError, asyncio.CancelledError):
                    raise
                except Exception as error:  # noqa: BLE001 - masked, like any unexpected error
                    raise _unexpected(context, error) from None
                if totals is None:
                    raise coded("NOT_FOUND", "party not found")
                if totals != last:
                    last = totals
                    context.fresh_loaders()
                    yield totals.update()
            batch = await anext(stream)


async def _finalized_stream(context: SocketContext, party_id: int) -> AsyncGenerator[Statement, None]:
    rt = context.rt
    async with _inbox(context) as inbox:
        async for batch in _events(context, inbox):
            if batch is None:
                continue
            event = batch.event
            for period in batch.closed:
                principal = context.party_principal()
                try:
                    value = await _shared(event, ("final", _same_access(principal), party_id, period),
                                          lambda p=principal, k=period: settlement.statement(rt, p, party_id, k, None))
                except (GraphQLError, asyncio.CancelledError):
                    raise
                except Exception as error:  # noqa: BLE001
                    raise _unexpected(context, error) from None
                if value is None:
                    raise coded("NOT_FOUND", "party not found")
                context.fresh_loaders()
                yield Statement(value=value)


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="Running totals of a party's open period, pushed after every change; partyId defaults to the caller's party."
    )
    async def settlement_updated(
        self, info: Info, party_id: strawberry.ID | None = None
    ) -> AsyncGenerator[SettlementUpdate, None]:
        context = _principal(info)
        party = await _watched_party(context, party_id)
        return _settlement_stream(context, party)

    @strawberry.subscription
    async def statement_finalized(self, info: Info, party_id: strawberry.ID | None = None) -> AsyncGenerator[Statement, None]:
        context = _principal(info)
        party = await _watched_party(context, party_id)
        return _finalized_stream(context, party)

"""Live subscriptions over WebSocket: `settlementUpdated` and `statementFinalized`.

The use-cases publish *what* changed after their commit (app/services/events.py): a network's
services and periods, or the period closed. Each subscription listens on its network's channel and
computes its own message with its subscriber's principal and the same access rules as queries
(app.services.settlement.statement): payloads carry what the subscriber may see, nothing more.
Subscribers that would compute the same thing from the same message (same party, same access)
share one computation (`pubsub.Event.memo`), so a thousand subscribers of one party cost one
statement per change, not a thousand; the network's totals are worked out before its subscribers
wake (a pubsub preparation), and subscribers with the same operation and access share each
message's execution and JSON while the engine overrides are on (graph/engine/shared_results.py).

A socket is bound to its key (graph/sockets.py): a revocation ends it with its subscriptions. Every
subscription also checks the key again on each message and every `REVALIDATE_SECONDS` while quiet
(through the key cache), in case the news of a revocation was lost on the way (Redis away).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import strawberry
from graphql import GraphQLError
from sqlalchemy import select

from app.auth import Principal, identify
from app.errors import DomainError
from app.observability import SUBSCRIPTIONS
from app.pubsub import Event, Preparation, Subscriber, channel_for
from app.services import events, settlement
from app.services.access import visible_parties
from graph.context import Context, Info
from graph.engine.socket_outlet import delivered
from graph.errors import coded, top_level
from graph.fanout import SharedComputation, same_access
from graph.ids import decode_optional
from graph.sockets import SocketContext, revalidate
from graph.statements import Statement
from graph.types import Money, Party
from models import Party as PartyRow

log = logging.getLogger("shareflow.subscriptions")

MAX_SUBSCRIPTIONS_PER_CONNECTION = 20
"Operations one socket may have running at once (strawberry refuses more)."
REVALIDATE_SECONDS = 5.0
"How often a quiet subscription checks its key again (each message checks it too)."
KEY_CHECKS_AT_ONCE = 4
"Keys of a network's sockets checked again side by side before a message (see `_BeforeWaking`)."

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


async def _shared(event: Event | None, key: tuple, compute: Callable[[], Awaitable[Any]]) -> Any:
    """`compute()` once per event and key, shared by every local subscriber that asks for it."""
    if event is None:
        return await compute()
    shared = event.memo.get(key)
    if shared is None:
        shared = event.memo[key] = SharedComputation(asyncio.ensure_future(compute()))
    return await shared.result()


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
        """The message (one object for every subscriber that gets these totals)."""
        made = self.__dict__.get("_update")
        if made is None:
            made = self._make_update()
            object.__setattr__(self, "_update", made)
        return made

    def _make_update(self) -> SettlementUpdate:
        c = self.currency
        return SettlementUpdate(
            party=Party(row=self.party), period=self.period, currency=c,
            receivable=Money.of(self.receivable, c), payable=Money.of(self.payable, c), net=Money.of(self.net, c),
        )


_WATCHED: dict[int, collections.Counter] = {}
"network -> the parties this process's `settlementUpdated` subscriptions watch (with how many)."
_WATCHERS_KEYS: dict[int, collections.Counter] = {}
"network -> the (authorization, key hash) of the sockets those subscriptions are on (with how many)."


@contextlib.contextmanager
def _watching(context: SocketContext, party_id: int):
    network_id = context.principal.network_id
    key = (context.authorization, context.key_hash)
    watched = _WATCHED.setdefault(network_id, collections.Counter())
    keys = _WATCHERS_KEYS.setdefault(network_id, collections.Counter())
    watched[party_id] += 1
    keys[key] += 1
    try:
        yield
    finally:
        for counter, item, registry in ((watched, party_id, _WATCHED), (keys, key, _WATCHERS_KEYS)):
            counter[item] -= 1
            if counter[item] <= 0:
                del counter[item]
            if not counter and registry.get(network_id) is counter:
                del registry[network_id]


async def _network_totals(rt, network_id: int) -> settlement.NetworkTotals | None:
    """Every party's running totals of the network (no access applied: see `_event_totals`), with
    the rows of the parties watched here; once per event for all the network's subscribers."""
    return await settlement.network_totals(rt, network_id, tuple(_WATCHED.get(network_id, ())))


class _BeforeWaking:
    """The preparation of the network's messages for `settlementUpdated` (see app.pubsub): after
    a usage change, before its subscribers here wake, the network's totals are computed and the
    keys of their sockets that the key cache has let go are checked again, once each, so that the
    subscribers wake once and find both ready instead of each waiting on the database. Equal for
    one runtime: one pass per event."""

    __slots__ = ("rt",)

    def __init__(self, rt) -> None:
        self.rt = rt

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _BeforeWaking) and other.rt is self.rt

    def __hash__(self) -> int:
        return id(self.rt)

    async def __call__(self, event: Event) -> None:
        network_id = event.data.get("network")
        if event.data.get("kind") == events.USAGE and network_id in _WATCHED:
            await asyncio.gather(
                _shared(event, ("network", network_id), lambda: _network_totals(self.rt, network_id)),
                self._keys_checked(network_id),
            )

    async def _keys_checked(self, network_id: int) -> None:
        """A few keys at a time: each check is a read of its own, and the database's connections
        are shared with every request."""
        rt = self.rt
        unknown = [
            authorization for authorization, key_hash in list(_WATCHERS_KEYS.get(network_id, ()))
            if authorization is not None and rt.keys.get(key_hash) is None
        ]
        for start in range(0, len(unknown), KEY_CHECKS_AT_ONCE):
            await asyncio.gather(*(
                identify(rt.sessions, authorization, rt.settings.operator_key, rt.keys)
                for authorization in unknown[start:start + KEY_CHECKS_AT_ONCE]
            ))


async def _event_totals(rt, event: Event, principal: Principal, party_id: int) -> _Totals | None:
    """The party's running totals after an event, as the principal may see it: from the network's
    totals when the party is one the principal may watch (itself; for the owner, any party of its
    network), else (a consumer, a closed period, a party gone) from its own statement."""
    network = await _shared(event, ("network", principal.network_id), lambda: _network_totals(rt, principal.network_id))
    row = None if network is None else network.parties.get(party_id)
    if (
        row is not None
        and row.kind != "CONSUMER"
        and row.network_id == principal.network_id
        and (principal.is_owner or row.id == principal.party_id)
    ):
        totals = event.memo.get(("party-totals", party_id))
        if totals is None:
            sums = network.of(party_id)
            totals = event.memo[("party-totals", party_id)] = _Totals(
                row, network.period, network.currency, sums.receivable, sums.payable, sums.net
            )
        return totals
    return await _shared(event, ("totals", same_access(principal), party_id),
                         lambda: _running_totals(rt, principal, party_id))


_SNAPSHOTS: weakref.WeakKeyDictionary[object, dict[int, tuple[int, Event]]] = weakref.WeakKeyDictionary()
"hub -> network -> its latest snapshot for first messages, with the hub's `unseen` count of the network then."


def _snapshot(rt, network_id: int) -> Event:
    """What a subscription's first message is computed from: an event standing for "now", shared by
    the network's subscriptions that start while no message of the network arrives (a burst of
    them, as when clients reconnect, reads the network's totals once instead of a statement each).
    Its totals are read after it is made; a change committed after that arrives as a message,
    either after a subscription started listening (which then gets it) or before (which then
    takes a new snapshot), so no first message misses a change (`_Hub.unseen`)."""
    hub = rt.pubsub.hub
    unseen = hub.unseen[channel_for(network_id)]
    of_hub = _SNAPSHOTS.setdefault(hub, {})
    taken = of_hub.get(network_id)
    if taken is None or taken[0] != unseen:
        taken = of_hub[network_id] = (unseen, Event(channel_for(network_id), {}))
    return taken[1]


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

    @classmethod
    def of(cls, taken: list[Event]) -> _Batch:
        return cls(
            taken[-1],
            frozenset(e.data.get("kind") for e in taken),
            tuple(e.data["period"] for e in taken if e.data.get("kind") == events.CLOSED),
        )


@contextlib.asynccontextmanager
async def _inbox(context: SocketContext, prepare: Preparation | None = None):
    """The network's channel, counted as an open subscription on /metrics while it is held."""
    with SUBSCRIPTIONS.track_inprogress():
        async with context.rt.pubsub.subscribe(channel_for(context.principal.network_id), prepare=prepare) as inbox:
            yield inbox


async def _events(context: SocketContext, inbox: Subscriber) -> AsyncGenerator[_Batch | None, None]:
    """The channel's events as they come, the waiting ones taken together, the key checked again
    before each batch; None after a quiet `REVALIDATE_SECONDS`."""
    while True:
        event = await inbox.next(REVALIDATE_SECONDS)
        batch = None
        if event is not None:
            taken = inbox.pending()
            if taken:
                batch = _Batch.of([event, *taken])
            else:  # the usual case: one batch for all the subscribers that took this event alone
                batch = event.memo.get(_Batch)
                if batch is None:
                    batch = event.memo[_Batch] = _Batch.of([event])
        await revalidate(context)
        yield batch


async def _settlement_stream(context: SocketContext, party_id: int) -> AsyncGenerator[SettlementUpdate, None]:
    rt = context.rt
    with _watching(context, party_id):
        async with _inbox(context, _BeforeWaking(rt)) as inbox:
            last: _Totals | None = None
            batch: _Batch | None = None
            stream = _events(context, inbox)
            while True:
                if batch is None and last is not None:
                    pass  # a quiet interval: only the key was checked
                elif batch is None or events.USAGE in batch.kinds:
                    principal = context.party_principal()
                    event = _snapshot(rt, principal.network_id) if batch is None else batch.event
                    try:
                        totals = await _event_totals(rt, event, principal, party_id)
                    except (GraphQLError, asyncio.CancelledError):
                        raise
                    except DomainError as error:  # FLOW_OVERFLOW: the period's figures exceed what the books hold
                        raise top_level(error) from None
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
                    statement = await _shared(event, ("final", same_access(principal), party_id, period),
                                              lambda p=principal, k=period: _final_statement(rt, p, party_id, k))
                except (GraphQLError, asyncio.CancelledError):
                    raise
                except Exception as error:  # noqa: BLE001
                    raise _unexpected(context, error) from None
                if statement is None:
                    raise coded("NOT_FOUND", "party not found")
                context.fresh_loaders()
                yield statement


async def _final_statement(rt, principal: Principal, party_id: int, period: str) -> Statement | None:
    """The party's final statement of the period as the principal may see it: one message for
    every subscriber that gets it."""
    value = await settlement.statement(rt, principal, party_id, period, None)
    return None if value is None else Statement(value=value)


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
        return delivered(_settlement_stream(context, party))

    @strawberry.subscription
    async def statement_finalized(self, info: Info, party_id: strawberry.ID | None = None) -> AsyncGenerator[Statement, None]:
        context = _principal(info)
        party = await _watched_party(context, party_id)
        return delivered(_finalized_stream(context, party))

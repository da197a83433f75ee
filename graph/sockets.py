"""An open WebSocket is bound to its key (DESIGN §7).

A socket authenticates in `connection_init` (`{"authorization": "Bearer <key>"}`) and from then on
listens on its key's pub/sub channel. Once the key no longer works (revoked, or the key that issued
it revoked: app/services/events.py `keys_invalidated`), every socket opened with it ends: its
operations are cancelled, its subscriptions with them, and it closes with 4403 (the legacy
protocol sends `connection_error` first). The process that revoked the key hears it before the
mutation answers, the others through Redis.

Each operation sent on a socket passes what an HTTP request passes before it runs: the key checked
again (through the key cache, like a request's; a key found no longer working ends the socket) and
one token of the key's rate budget (past it the operation is answered RATE_LIMITED with
`retryAfterSeconds` and not run). A message larger than SHAREFLOW_MAX_BODY_BYTES is refused unread,
so which operation it carried is not known: the socket closes with 4413 (`LIMIT_EXCEEDED`).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from json import JSONDecodeError
from typing import Any

from graphql import GraphQLError
from starlette.websockets import WebSocketDisconnect, WebSocketState
from strawberry.asgi import ASGIWebSocketAdapter
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http.exceptions import NonJsonMessageReceived, NonTextMessageReceived, WebSocketDisconnected
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import BaseGraphQLTransportWSHandler
from strawberry.subscriptions.protocols.graphql_ws.handlers import BaseGraphQLWSHandler
from strawberry.types.unset import UNSET

from app.auth import Caller, Principal, hash_key, identify, split_key
from app.limits import RateLimited, RateLimiter, bucket_of
from app.pubsub import Event, key_channel
from graph.context import Context
from graph.errors import coded
from graph.loaders import Loaders

log = logging.getLogger("shareflow.sockets")

KEY_NO_LONGER_WORKS = 4403
"The close code of a socket whose key no longer works (graphql-transport-ws's `Forbidden`)."
MESSAGE_TOO_LARGE = 4413
"The close code of a socket that sent a message larger than SHAREFLOW_MAX_BODY_BYTES."

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
    key_hash: str | None = None
    "The key's hash, for the key cache: each operation and message checks the key again."
    end: Callable[[], Awaitable[None]] | None = field(default=None, repr=False)
    "How the socket's protocol handler ends it once its key no longer works."
    key_lost: bool = False
    "The key no longer works: nothing more runs on this socket."
    _ending: asyncio.Task | None = field(default=None, repr=False)
    _bindings: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack, repr=False)
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

    def key_invalid(self) -> None:
        """The socket's key no longer works: nothing more runs on it, and its handler ends it (once)."""
        self.principal = None
        self.caller = None
        if not self.key_lost:
            self.key_lost = True
            if self.end is not None:
                self._ending = asyncio.ensure_future(self.end())

    async def bind(self, key_id: int, prefix: str) -> None:
        """Listen on the key's channel for as long as the socket is open."""
        rt = self.rt

        def heard(_: Event) -> None:
            rt.keys.forget_key(key_id)  # this process's requests with the key ask the database again
            self.key_invalid()

        try:
            await self._bindings.enter_async_context(rt.pubsub.listen(key_channel(prefix), heard))
        except Exception:  # noqa: BLE001 - pub/sub away: each operation's own check of the key still ends the socket
            log.warning("a socket of key %s could not listen for its revocation", prefix, exc_info=True)

    async def release(self) -> None:
        """The socket is gone: stop listening."""
        await self._bindings.aclose()


def socket_context(rt, websocket, response) -> SocketContext:
    """The context strawberry keeps for a socket; the caller is known after `connection_init`."""
    return SocketContext(rt=rt, principal=None, request=websocket, response=response)


async def on_connect(context: SocketContext):
    """`connection_init`: the payload must carry a working key, else the socket is closed (4403
    with graphql-transport-ws, `connection_error` with the legacy protocol). A socket is
    initialised once."""
    if context.authorization is not None:
        raise ConnectionRejectionError({"code": "INVALID", "message": "the connection is initialised already"})
    params = context.connection_params or {}
    authorization = params.get("authorization", params.get("Authorization"))
    if not isinstance(authorization, str) or not authorization:
        raise ConnectionRejectionError({"code": "UNAUTHENTICATED", "message": "connection_init needs an authorization"})
    rt = context.rt
    caller = await identify(rt.sessions, authorization, rt.settings.operator_key, rt.keys)
    key = authorization.strip().partition(" ")[2].strip()
    if caller is not None and caller.principal.key_id is not None:
        # Listening first, then the key checked again in the database: a revocation committed
        # before that check is seen, one committed after it is heard.
        await context.bind(caller.principal.key_id, split_key(key))
        caller = await identify(rt.sessions, authorization, rt.settings.operator_key, rt.keys, fresh=True)
    if caller is None or context.key_lost:
        raise ConnectionRejectionError({"code": "UNAUTHENTICATED", "message": "the API key is missing, unknown or revoked"})
    context.authorization = authorization
    context.key_hash = hash_key(key)
    context.caller = caller
    context.principal = caller.principal
    return UNSET  # a plain connection_ack


async def revalidate(context: SocketContext) -> Caller:
    """The socket's key checked again, as an HTTP request's is (a key in the cache costs a hash and
    a lookup, no suspension); once it no longer works, raises UNAUTHENTICATED and ends the socket."""
    rt = context.rt
    caller = None
    if not context.key_lost:
        caller = None if context.key_hash is None else rt.keys.get(context.key_hash)
        if caller is None and context.authorization is not None:
            caller = await identify(rt.sessions, context.authorization, rt.settings.operator_key, rt.keys)
    if caller is None or context.key_lost:  # the key may have been lost while it was checked
        context.key_invalid()
        raise coded("UNAUTHENTICATED", "the API key was revoked or no longer works")
    if caller is not context.caller:
        context.caller = caller
        context.principal = caller.principal
    return caller


async def refusal(context: SocketContext, limiter: RateLimiter | None) -> GraphQLError | None:
    """Why an operation sent on the socket may not run, as an HTTP request would be refused: its
    key no longer works, or the key's rate budget is spent. None when it may run."""
    try:
        caller = await revalidate(context)
    except GraphQLError as refused:
        return refused
    if limiter is not None:
        try:
            await limiter.check(bucket_of(caller.principal))
        except RateLimited as limited:
            return GraphQLError(
                limited.message, extensions={"code": limited.code, "retryAfterSeconds": round(limited.retry_after, 3)}
            )
    return None


class MessageTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"a message is larger than {limit} bytes")


class _BoundedSocket(ASGIWebSocketAdapter):
    """Strawberry's socket adapter, refusing unread a message larger than an HTTP request body may be."""

    def __init__(self, view, websocket, limit: int) -> None:
        super().__init__(view, websocket, websocket)
        self.limit = limit

    async def iter_json(self, *, ignore_parsing_errors: bool = False) -> AsyncGenerator[object, None]:
        limit = self.limit
        try:
            while self.ws.application_state != WebSocketState.DISCONNECTED:
                text = await self.ws.receive_text()
                if len(text) > limit // 4 and len(text.encode(errors="surrogatepass")) > limit:
                    raise MessageTooLarge(limit)
                try:
                    yield self.view.decode_json(text)
                except JSONDecodeError as error:
                    if not ignore_parsing_errors:
                        raise NonJsonMessageReceived from error
        except KeyError as error:
            raise NonTextMessageReceived from error
        except WebSocketDisconnect:
            pass


class _KeyBound:
    """What both protocols' handlers add to strawberry's: the socket bound to its key, messages
    bounded in size, each operation admitted as an HTTP request would be (`refusal`)."""

    context: SocketContext
    sends_connection_error = False
    "The legacy protocol says why in a `connection_error` message before it closes."

    def __init__(self, *, view, websocket, context, **kwargs) -> None:
        super().__init__(view=view, websocket=_BoundedSocket(view, websocket.ws, view.max_body_bytes), context=context, **kwargs)
        context.end = self.end_for_key

    async def handle(self) -> None:
        try:
            await super().handle()
        except MessageTooLarge as refused:  # its operations are ended already
            await self.close_for(MESSAGE_TOO_LARGE, {"code": "LIMIT_EXCEEDED", "message": str(refused)})
        finally:
            await self.context.release()

    async def refusal(self) -> GraphQLError | None:
        return await refusal(self.context, self.view.rate_limiter)

    async def end_operations(self) -> None:
        raise NotImplementedError

    async def end_for_key(self) -> None:
        await self.end_operations()
        await self.close_for(KEY_NO_LONGER_WORKS, {"code": "UNAUTHENTICATED", "message": "the API key no longer works"})

    async def close_for(self, code: int, error: dict[str, str]) -> None:
        """Closes the socket for `error` (`{"code", "message"}`)."""
        with contextlib.suppress(WebSocketDisconnected, WebSocketDisconnect, RuntimeError, OSError):  # the client may be gone
            if self.sends_connection_error:
                await self.websocket.send_json({"type": "connection_error", "payload": error})
            await self.websocket.close(code, f"{error['code']}: {error['message']}")


class KeyBoundTransportWS(_KeyBound, BaseGraphQLTransportWSHandler):
    """graphql-transport-ws bound to its key: a refused operation gets an `error` message."""

    async def run_operation(self, operation) -> None:
        refused = await self.refusal()
        if refused is not None:
            await operation.send_initial_errors([refused])
            return
        await super().run_operation(operation)

    async def end_operations(self) -> None:
        for operation_id in list(self.operations):
            await self.cleanup_operation(operation_id)


class KeyBoundLegacyWS(_KeyBound, BaseGraphQLWSHandler):
    """The legacy graphql-ws bound to its key: a refused operation gets an `error` message."""

    sends_connection_error = True

    async def handle_async_results(self, operation_id, query, operation_name, variables) -> None:
        refused = await self.refusal()
        if refused is not None:
            self.tasks.pop(operation_id, None)
            await self.send_message({"type": "error", "id": operation_id, "payload": refused.formatted})
            return
        await super().handle_async_results(operation_id, query, operation_name, variables)

    async def end_operations(self) -> None:
        await self.cleanup()  # each operation answered `complete`

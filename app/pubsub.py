"""Publish/subscribe between the use-cases (which publish what changed, after their commit) and the
live subscriptions (which turn it into per-subscriber messages).

Two implementations behind one interface:

- `InProcessPubSub` (the default): subscribers of this process only.
- `RedisPubSub` (when `SHAREFLOW_REDIS_URL` is set): messages go through Redis pub/sub, so that a
  subscriber on one gateway process sees a change made through another.

Either way a process fans a channel's messages out to its local subscribers itself: each has a
bounded queue, and a publisher never waits for a slow subscriber (a full queue drops its oldest
message and counts the loss; the messages say *that* something changed, so the latest one is what
matters). With Redis a process holds one pub/sub connection and subscribes each channel once, for
as long as it has a local subscriber on it.

A subscriber may bring a preparation (`subscribe(channel, prepare=...)`): work its messages need
that is the same for all of them (the network's totals, say). The hub runs each distinct preparation
once per message, before it wakes the channel's subscribers, who then find the result in the
message's `memo` instead of all waking to wait for it. Messages still reach every subscriber in the
order they were published.

A listener (`listen(channel, callback)`) is called by the hub with each message as it arrives,
without an inbox or a task of its own: how an open socket hears that its key no longer works.

Messages are small JSON-able dicts; channels are named per network (`channel_for`) and per API key
(`key_channel`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from app.errors import DomainError

log = logging.getLogger("shareflow.pubsub")

QUEUE_SIZE = 256
"Messages a subscriber may fall behind by before its oldest ones are dropped."


def channel_for(network_id: int) -> str:
    return f"shareflow:network:{network_id}"


def key_channel(prefix: str) -> str:
    """A key's channel, named by its random prefix rather than its id: deployments (or test runs)
    sharing one Redis never hear each other's keys."""
    return f"shareflow:key:{prefix}"


class Event:
    """One message as delivered to this process's subscribers: the same object for all of them, so
    that they can share what they derive from it (`memo`) instead of each computing it again."""

    __slots__ = ("channel", "data", "memo")

    def __init__(self, channel: str, data: dict[str, Any]) -> None:
        self.channel = channel
        self.data = data
        self.memo: dict[Any, Any] = {}

    def __repr__(self) -> str:
        return f"Event({self.channel!r}, {self.data!r})"


Preparation = Callable[[Event], Awaitable[None]]
"""Run once per message before the subscribers that brought it wake; equal preparations (`==`)
count as one."""


class Subscriber:
    """A local subscriber's inbox: `await next()` (or `async for`) gives the channel's events in order.

    A deque and one waiter future rather than an `asyncio.Queue` under `asyncio.wait_for`: a fan-out
    wakes a thousand inboxes at once, and a wait with a timeout here costs a timer, not a task."""

    def __init__(self, hub: _Hub, channel: str, maxsize: int, prepare: Preparation | None = None) -> None:
        self.hub = hub
        self.channel = channel
        self.maxsize = maxsize
        self.prepare = prepare
        self._items: collections.deque[Event] = collections.deque()
        self._waiter: asyncio.Future | None = None
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.dropped = 0
        "Events lost because the inbox was full (the oldest go first)."

    def offer(self, event: Event) -> None:
        """Never blocks: a full inbox loses its oldest event."""
        items = self._items
        if len(items) >= self.maxsize:
            items.popleft()
            self.dropped += 1
        items.append(event)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next(self, timeout: float | None = None) -> Event | None:
        """The next event; None when `timeout` seconds pass without one."""
        items = self._items
        if not items:
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            deadline = self._deadline = None if timeout is None else loop.time() + timeout
            if deadline is not None and (self._timer is None or self._timer.when() > deadline):
                if self._timer is not None:
                    self._timer.cancel()
                self._timer = loop.call_at(deadline, self._expire)
            try:
                await waiter
            finally:
                self._waiter = None
            if not items:
                return None
        return items.popleft()

    def _expire(self) -> None:
        """The inbox's one timer: moved on to the current wait's deadline rather than made anew
        for every wait (a fan-out's waits end long before their deadlines)."""
        self._timer = None
        waiter, deadline = self._waiter, self._deadline
        if waiter is None or waiter.done() or deadline is None:
            return
        loop = waiter.get_loop()
        if loop.time() >= deadline:
            waiter.set_result(None)
        else:
            self._timer = loop.call_at(deadline, self._expire)

    def pending(self) -> list[Event]:
        """Every event already waiting, taken out of the inbox."""
        events = list(self._items)
        self._items.clear()
        return events

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        event = None
        while event is None:
            event = await self.next()
        return event


class Listener:
    """A subscriber that is called with each event as the hub delivers it, instead of queueing it:
    the callback must neither block nor raise."""

    __slots__ = ("callback", "channel", "prepare")

    def __init__(self, channel: str, callback: Callable[[Event], None]) -> None:
        self.channel = channel
        self.callback = callback
        self.prepare = None

    def offer(self, event: Event) -> None:
        try:
            self.callback(event)
        except Exception:  # noqa: BLE001 - one listener's fault must not keep the event from the others
            log.exception("a listener on %s failed", self.channel)


class _Hub:
    """The local fan-out: channel -> this process's subscribers (and their preparations)."""

    def __init__(self) -> None:
        self.channels: dict[str, set[Subscriber | Listener]] = {}
        self._preparations: dict[str, collections.Counter[Preparation]] = {}
        self._delivering: dict[str, asyncio.Future] = {}
        "channel -> its latest message still being prepared: the next one is offered after it."
        self.unseen: collections.Counter[str] = collections.Counter()
        """channel -> a count of the moments from which a subscriber starting now could miss a
        message: each message that reaches this process, and each time the channel's last local
        subscriber leaves (from then on its messages may not reach it at all). A subscriber that
        finds the count as it was when something was read misses no change made after that read."""

    def add(self, subscriber: Subscriber | Listener) -> bool:
        """True when the subscriber is the channel's first."""
        subscribers = self.channels.get(subscriber.channel)
        first = subscribers is None
        if first:
            subscribers = self.channels[subscriber.channel] = set()
        subscribers.add(subscriber)
        if subscriber.prepare is not None:
            self._preparations.setdefault(subscriber.channel, collections.Counter())[subscriber.prepare] += 1
        return first

    def remove(self, subscriber: Subscriber | Listener) -> bool:
        """True when the channel has no subscriber left."""
        subscribers = self.channels.get(subscriber.channel)
        if subscribers is None or subscriber not in subscribers:
            return False
        subscribers.discard(subscriber)
        preparations = self._preparations.get(subscriber.channel)
        if subscriber.prepare is not None and preparations is not None:
            preparations[subscriber.prepare] -= 1
            if preparations[subscriber.prepare] <= 0:
                del preparations[subscriber.prepare]
            if not preparations:
                del self._preparations[subscriber.channel]
        if not subscribers:
            del self.channels[subscriber.channel]
            if isinstance(subscriber, Subscriber):  # a listener's channel (a key's) has no snapshots: no count kept
                self.unseen[subscriber.channel] += 1
            return True
        return False

    def deliver(self, channel: str, data: dict[str, Any]) -> int:
        self.unseen[channel] += 1
        subscribers = self.channels.get(channel)
        if not subscribers:
            return 0
        event = Event(channel, data)
        preparations = self._preparations.get(channel)
        previous = self._delivering.get(channel)
        if not preparations and previous is None:
            self._offer(channel, event)
        else:
            delivery = self._delivering[channel] = asyncio.ensure_future(
                self._prepared(channel, event, list(preparations or ()), previous)
            )
            delivery.add_done_callback(lambda done: self._delivered(channel, done))
        return len(subscribers)

    async def _prepared(self, channel: str, event: Event, preparations: list[Preparation], previous) -> None:
        for prepare in preparations:
            try:
                await prepare(event)
            except DomainError as refusal:  # FLOW_OVERFLOW, say: each subscriber answers it with its code
                log.info("preparing a message on %s refused: %s", channel, refusal)
            except Exception:  # noqa: BLE001 - the subscribers then meet the failure themselves
                log.exception("preparing a message on %s failed", channel)
        if previous is not None:
            await asyncio.wait([previous])  # however it ended: this message goes after it
        self._offer(channel, event)

    def _delivered(self, channel: str, delivery: asyncio.Future) -> None:
        if self._delivering.get(channel) is delivery:
            del self._delivering[channel]

    def _offer(self, channel: str, event: Event) -> None:
        for subscriber in self.channels.get(channel, ()):
            subscriber.offer(event)


class PubSub:
    """The interface: `publish(channel, message)` and `announce(channel, message)`,
    `subscribe(channel, prepare=None)` and `listen(channel, callback)` as async context managers,
    `close()`."""

    def __init__(self) -> None:
        self.hub = _Hub()

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        raise NotImplementedError

    async def announce(self, channel: str, message: dict[str, Any]) -> None:
        """`publish`, the subscribers of this process having the message before it returns (they
        may get it a second time: what it says must be idempotent)."""
        await self.publish(channel, message)

    def subscribe(
        self, channel: str, maxsize: int = QUEUE_SIZE, prepare: Preparation | None = None
    ) -> contextlib.AbstractAsyncContextManager[Subscriber]:
        return self._joined(Subscriber(self.hub, channel, maxsize, prepare))

    def listen(self, channel: str, callback: Callable[[Event], None]) -> contextlib.AbstractAsyncContextManager[Listener]:
        """`callback(event)` for each of the channel's events while the block runs; like a
        subscriber, ready to hear a change published from anywhere once the block is entered."""
        return self._joined(Listener(channel, callback))

    @contextlib.asynccontextmanager
    async def _joined(self, subscriber: Subscriber | Listener):
        channel = subscriber.channel
        first = self.hub.add(subscriber)
        try:
            if first:
                await self._listen(channel)
            yield subscriber
        finally:
            if self.hub.remove(subscriber):
                await self._unlisten(channel)

    async def _listen(self, channel: str) -> None:
        """Start receiving a channel's messages from elsewhere (the channel's first local subscriber)."""

    async def _unlisten(self, channel: str) -> None:
        """Stop receiving a channel's messages (its last local subscriber left)."""

    def subscriber_count(self, channel: str) -> int:
        return len(self.hub.channels.get(channel, ()))

    async def close(self) -> None:
        pass


class InProcessPubSub(PubSub):
    """Subscribers of this process only: a publish is a fan-out to local inboxes, nothing awaited."""

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        self.hub.deliver(channel, message)


class RedisPubSub(PubSub):
    """Redis pub/sub: every process publishes to Redis and receives, on one connection, the channels
    its local subscribers listen to. A subscriber is ready once Redis confirmed its channel, so a
    change published after that reaches it whichever process made it."""

    def __init__(self, url: str, confirm_timeout: float = 5.0) -> None:
        super().__init__()
        from redis.asyncio import Redis

        self.url = url
        self.redis = Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5, socket_keepalive=True)
        self.confirm_timeout = confirm_timeout
        self._pubsub = None
        self._reader: asyncio.Task | None = None
        self._lock = asyncio.Lock()
        self._confirmed: dict[str, asyncio.Event] = {}
        self._closed = False

    async def publish(self, channel: str, message: dict[str, Any]) -> None:
        await self.redis.publish(channel, json.dumps(message, separators=(",", ":")))

    async def announce(self, channel: str, message: dict[str, Any]) -> None:
        self.hub.deliver(channel, message)  # here at once; Redis brings it back a moment later
        await self.publish(channel, message)

    async def _listen(self, channel: str) -> None:
        confirmed = self._confirmed[channel] = asyncio.Event()
        async with self._lock:
            if self._pubsub is None:
                self._pubsub = self.redis.pubsub()
            await self._pubsub.subscribe(channel)
            if self._reader is None or self._reader.done():
                self._reader = asyncio.create_task(self._read(), name="shareflow-redis-pubsub")
        try:
            await asyncio.wait_for(confirmed.wait(), self.confirm_timeout)
        except TimeoutError:
            log.warning("Redis did not confirm the subscription to %s in time", channel)

    async def _unlisten(self, channel: str) -> None:
        self._confirmed.pop(channel, None)
        if self._closed or self._pubsub is None:
            return
        async with self._lock:
            if channel in self.hub.channels:  # a new subscriber came meanwhile
                return
            with contextlib.suppress(Exception):
                await self._pubsub.unsubscribe(channel)

    async def _read(self) -> None:
        pubsub = self._pubsub
        backoff = 0.1
        while not self._closed:
            try:
                message = await pubsub.get_message(timeout=None)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # noqa: BLE001 - Redis away: retry; redis-py resubscribes on reconnect
                log.warning("Redis pub/sub read failed (%s); retrying in %.1f s", type(error).__name__, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            if message is None:
                continue
            kind = message.get("type")
            channel = message.get("channel")
            if isinstance(channel, bytes):
                channel = channel.decode()
            if kind == "subscribe":
                confirmed = self._confirmed.get(channel)
                if confirmed is not None:
                    confirmed.set()
            elif kind == "message":
                try:
                    data = json.loads(message["data"])
                except (TypeError, ValueError):
                    log.warning("ignored a malformed message on %s", channel)
                    continue
                self.hub.deliver(channel, data)

    async def close(self) -> None:
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(BaseException):
                await self._reader
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
        with contextlib.suppress(Exception):
            await self.redis.aclose()


def create_pubsub(redis_url: str | None) -> PubSub:
    return RedisPubSub(redis_url) if redis_url else InProcessPubSub()

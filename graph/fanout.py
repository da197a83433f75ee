"""What subscribers of a fan-out share: one computation per change and access.

A change reaches every subscriber of its network at once; subscribers that would compute the same
thing (same payload, same access) share one computation (graph/subscriptions.py through
`pubsub.Event.memo`, and with the engine overrides on the execution of each message too:
graph/engine/shared_results.py)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from app.auth import Principal

_ACCESS: dict[Principal, Principal] = {}


def same_access(principal: Principal) -> Principal:
    """The principal without its key id: what access depends on, so that subscribers with
    different keys of the same party share a computation."""
    same = _ACCESS.get(principal)
    if same is None:
        if len(_ACCESS) > 10_000:
            _ACCESS.clear()
        same = _ACCESS[principal] = dataclasses.replace(principal, key_id=None)
    return same


class SharedComputation:
    """One shared computation and the subscribers waiting for it: each waits on a future of its
    own (its cancellation cancels only that), all woken by one callback; once it is done, a
    subscriber takes the result without suspending."""

    __slots__ = ("task", "waiters")

    def __init__(self, task: asyncio.Future) -> None:
        self.task = task
        self.waiters: list[asyncio.Future] = []
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Future) -> None:
        if not task.cancelled():
            task.exception()  # retrieved: raised to the subscribers, not logged as lost
        for waiter in self.waiters:
            if not waiter.done():
                waiter.set_result(None)
        self.waiters.clear()

    async def result(self) -> Any:
        task = self.task
        if not task.done():
            waiter = task.get_loop().create_future()
            self.waiters.append(waiter)
            await waiter
        return task.result()

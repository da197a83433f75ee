"""What the use-cases publish after their commit, for the live subscriptions (graph/subscriptions.py)
and the open sockets (graph/sockets.py).

A message says only *what* changed in a network (services and periods, or the period closed), never
amounts: each subscriber computes what it may see with its own key; or that a key no longer works.
Publishing comes after the commit, so a subscriber that reads on receipt sees the change; a failure
to publish is logged and never undoes or fails the committed change.
"""

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from app.pubsub import channel_for, key_channel

log = logging.getLogger("shareflow.events")

USAGE = "usage"
CLOSED = "closed"
KEY_INVALID = "key-invalid"


async def _publish(rt, channel: str, message: dict[str, Any], announce: bool = False) -> None:
    try:
        if announce:
            await rt.pubsub.announce(channel, message)
        else:
            await rt.pubsub.publish(channel, message)
    except Exception:  # noqa: BLE001 - the change is committed; subscribers catch up on the next one
        log.exception("could not publish %s on %s", message.get("kind"), channel)


async def usage_changed(rt, network_id: int, events: Iterable[Any]) -> None:
    """Usage was recorded or voided: `events` have `.service_id` and `.period`. Nothing is sent
    when nothing changed."""
    services: set[int] = set()
    periods: set[str] = set()
    for event in events:
        services.add(event.service_id)
        periods.add(event.period)
    if services:
        await _publish(rt, channel_for(network_id), {"kind": USAGE, "network": network_id, "services": sorted(services), "periods": sorted(periods)})


async def period_closed(rt, network_id: int, period: str) -> None:
    await _publish(rt, channel_for(network_id), {"kind": CLOSED, "network": network_id, "period": period})


async def keys_invalidated(rt, keys: Iterable[tuple[int, str]]) -> None:
    """Keys, as (id, prefix), that no longer work (revoked; a deactivated party's, once parties have
    that): this process's key cache forgets them at once, and each is announced on its channel, so
    that every process ends the sockets opened with it, this one before this returns (where the
    news is lost, Redis away, the sockets' own checks of the key end them within the key cache's TTL)."""
    keys = list(keys)
    for key_id, _ in keys:
        rt.keys.forget_key(key_id)
    announced = asyncio.gather(*(_publish(rt, key_channel(prefix), {"kind": KEY_INVALID}, announce=True) for _, prefix in keys))
    # Whatever becomes of the caller: a key revoked on a socket of its own ends that socket's
    # operations, the revoking one included, as soon as the first announcement reaches it.
    await asyncio.shield(announced)

"""What the use-cases publish after their commit, for the live subscriptions (graph/subscriptions.py).

A message says only *what* changed in a network (services and periods, or the period closed), never
amounts: each subscriber computes what it may see with its own key. Publishing comes after the
commit, so a subscriber that reads on receipt sees the change; a failure to publish is logged and
never undoes or fails the committed change.
"""

import logging
from collections.abc import Iterable
from typing import Any

from app.pubsub import channel_for

log = logging.getLogger("shareflow.events")

USAGE = "usage"
CLOSED = "closed"


async def _publish(rt, network_id: int, message: dict[str, Any]) -> None:
    try:
        await rt.pubsub.publish(channel_for(network_id), message)
    except Exception:  # noqa: BLE001 - the change is committed; subscribers catch up on the next one
        log.exception("could not publish %s for network %s", message.get("kind"), network_id)


async def usage_changed(rt, network_id: int, events: Iterable[Any]) -> None:
    """Usage was recorded or voided: `events` have `.service_id` and `.period`. Nothing is sent
    when nothing changed."""
    services: set[int] = set()
    periods: set[str] = set()
    for event in events:
        services.add(event.service_id)
        periods.add(event.period)
    if services:
        await _publish(rt, network_id, {"kind": USAGE, "network": network_id, "services": sorted(services), "periods": sorted(periods)})


async def period_closed(rt, network_id: int, period: str) -> None:
    await _publish(rt, network_id, {"kind": CLOSED, "network": network_id, "period": period})

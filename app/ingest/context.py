"""What a batch knows of its network and services, read once per batch, and the checks of its items against them."""

import json
from collections import defaultdict
from typing import NamedTuple

from sqlalchemy.ext.asyncio import AsyncConnection

from app.billing.pricing import Charge
from app.errors import Problem
from app.ingest.items import FIELDS, Prepared
from app.ingest.sql import fetch_all, ingest_sql
from app.services import catalog
from models import Network, Service

_FIELD_ORDER = {name: position for position, name in enumerate(FIELDS)}


class BatchNetwork(NamedTuple):
    """The columns of a network that a batch reads (a Network row has them too)."""

    id: int
    time_zone: str
    first_period: str
    rounding_mode: str


class BatchService(NamedTuple):
    """The columns of a service that a batch reads (a Service row has them too)."""

    id: int
    network_id: int
    provider_id: int
    billed_by_id: int
    currency: str


class Context:
    """What a batch needs to know about its network and services, read once per batch.

    Read through the driver, in as few turns as the reads allow (fetch_all): a batch's context
    read through the ORM cost three or four turns of the database thread per statement, and
    every turn waits for this thread to be free of the other requests it is reading meanwhile."""

    def __init__(self, network: BatchNetwork | Network, services: dict[int, BatchService | Service]) -> None:
        self.network = network
        self.first_period = network.first_period
        self.services = services
        self.latest: object = None
        "The latest acceptable occurredAt, bound as Prepared.occurred_at is (set by a batch that records)."
        self.allowed: dict[int, bool] = {}
        "Per service of the batch: whether the batch's principal may record its usage."
        self.plans: dict[tuple[int, str], dict[str, Charge]] = {}
        self.charged: set[tuple[int, str, str]] = set()
        "(service, period, metric) of every charge in self.plans."
        self.closed: set[str] = set()

    async def load(self, connection: AsyncConnection, pairs: set[tuple[int, str]]) -> None:
        """The plans in force for these (service, period) pairs: one statement per period."""
        by_period: dict[str, list[int]] = defaultdict(list)
        for service_id, period in pairs - self.plans.keys():
            by_period[period].append(service_id)
        if not by_period:
            return
        sql = ingest_sql(connection)
        asked = sorted(by_period.items())
        answers = await fetch_all(connection, [
            (sql.in_list(sql.plans, len(ids)), (self.network.id, period, period, *sorted(ids)))
            for period, ids in asked
        ])
        for (period, ids), rows in zip(asked, answers):
            documents = {service_id: json.loads(charges) if isinstance(charges, str | bytes) else charges
                         for service_id, charges in rows}
            for service_id in ids:
                charges = self.plans[(service_id, period)] = {
                    c.metric: c for c in map(catalog.charge_from_json, documents.get(service_id, ()))
                }
                self.charged.update((service_id, period, metric) for metric in charges)

    def charge(self, service_id: int, period: str, metric: str) -> Charge | None:
        return self.plans.get((service_id, period), {}).get(metric)

    def usable(self, item: Prepared) -> bool:
        """No problem of its own, a service the principal may record, a time in an open range."""
        return (
            not item.problems
            and self.allowed.get(item.service_id) is True
            and item.occurred_at <= self.latest
            and item.period >= self.first_period
        )

    def problems(self, item: Prepared, index: int) -> list[Problem]:
        """Every problem of an item that is not usable, in the order of FIELDS."""
        problems = list(item.problems)
        allowed = self.allowed.get(item.service_id)
        if allowed is None:
            problems.append(Problem(("events", str(index), "serviceId"), "NOT_FOUND", "service not found"))
        elif not allowed:
            problems.append(Problem(("events", str(index), "serviceId"), "FORBIDDEN", "only the service's provider or the owner may record its usage"))
        if item.occurred_at is not None:
            if item.occurred_at > self.latest:
                problems.append(Problem(("events", str(index), "occurredAt"), "INVALID", "lies too far in the future"))
            elif item.period < self.first_period:
                problems.append(Problem(("events", str(index), "occurredAt"), "BEFORE_FIRST_PERIOD", f"lies before the first period {self.first_period}"))
        problems.sort(key=lambda problem: _FIELD_ORDER[problem.path[2]])
        return problems

"""A close killed at any moment leaves the period open with no final statement or closed with all
of them; a retried close then completes."""

import asyncio
import os
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from pathlib import Path

from sqlalchemy import func, select

from app.auth import OPERATOR, Principal
from app.billing.pricing import Charge, ChargeModel
from app.billing.waterfall import ShareKind
from app.migrate import upgrade
from app.runtime import Runtime
from app.ingest.items import UsageItem
from app.ingest.record import record_usage
from app.services import catalog, networks, parties
from app.services.agreements import AgreementDraft, RuleDraft, add_agreement
from app.settings import Settings
from models import ClosedPeriod, FinalStatement

SHAREFLOW = str(Path(sys.executable).parent / "shareflow")
CONSUMERS = 400


def last_month() -> str:
    first_of_month = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return (first_of_month - timedelta(days=1)).strftime("%Y-%m")


async def seed(url: str) -> tuple[str, str]:
    """A network whose last month holds one rental for each of CONSUMERS consumers."""
    rt = Runtime.from_settings(Settings(database_url=url))
    await upgrade(rt.engine)
    period = last_month()
    created = await networks.create_network(rt, OPERATOR, name="Crash", currency="EUR", owner_name="Owner", first_period=period)
    owner = Principal(created.network.id, created.owner.id, "OWNER")
    provider = (await parties.onboard_partner(rt, owner, name="Cars", kind="PROVIDER", external_ref=None, agreements=[], issue_api_key=False)).party
    partner = (await parties.onboard_partner(rt, owner, name="Parking", kind="PARTNER", external_ref=None, agreements=[], issue_api_key=False)).party
    service, _ = await catalog.create_service(rt, owner, name="Cars", provider_id=provider.id, billed_by_id=None, currency=None,
                                              charges=[Charge(metric="minutes", model=ChargeModel.PER_UNIT, unit_price=D("0.29"))])
    for payee, percent in ((provider, "85"), (partner, "3")):
        await add_agreement(rt, owner, AgreementDraft(service_id=service.id, payee_id=payee.id, effective_from=period,
                                                      rule=RuleDraft(ShareKind.PERCENT, percent=D(percent))))
    when = datetime.strptime(period + "-15", "%Y-%m-%d").replace(tzinfo=UTC)
    items = [UsageItem(f"e{i}", service.id, f"c{i}", "minutes", D(i % 50 + 1), when) for i in range(CONSUMERS)]
    assert (await record_usage(rt, owner, items)).count("ACCEPTED") == CONSUMERS
    await rt.close()
    return created.owner_key, period


async def books(url: str) -> tuple[int, int]:
    """(closed periods, final statements) in the database."""
    rt = Runtime.from_settings(Settings(database_url=url))
    async with rt.sessions() as session:
        counts = (
            await session.scalar(select(func.count()).select_from(ClosedPeriod)),
            await session.scalar(select(func.count()).select_from(FinalStatement)),
        )
    await rt.close()
    return counts


def test_a_killed_close_leaves_all_or_nothing_and_a_retry_completes(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/crash.db"
    owner_key, period = asyncio.run(seed(url))
    env = {**os.environ, "SHAREFLOW_DATABASE_URL": url}
    command = [SHAREFLOW, "close-period", period, "--api-key", owner_key]

    started = time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    duration = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    # Learn how many statements a close issues, then start over on a fresh copy each time.
    expected = asyncio.run(books(url))[1]
    assert expected == CONSUMERS + 3  # every consumer, the owner, the provider, the partner

    rng = random.Random(7)
    for attempt in range(4):
        fresh = f"sqlite+aiosqlite:///{tmp_path}/crash-{attempt}.db"
        key, _ = asyncio.run(seed(fresh))
        env["SHAREFLOW_DATABASE_URL"] = fresh
        process = subprocess.Popen([SHAREFLOW, "close-period", period, "--api-key", key], env=env, cwd=tmp_path,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, max(0.3, duration)))
        process.kill()
        process.wait()
        closed, statements = asyncio.run(books(fresh))
        assert (closed, statements) in ((0, 0), (1, expected)), "a close must be all or nothing"
        if closed == 0:
            retry = subprocess.run([SHAREFLOW, "close-period", period, "--api-key", key], env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
            assert retry.returncode == 0, retry.stderr
        closed, statements = asyncio.run(books(fresh))
        assert (closed, statements) == (1, expected)

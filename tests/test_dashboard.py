"""The dashboard in a real browser: headless Chromium (Debian's package) driven by Playwright."""

import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests.servers import serving, shareflow

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    if os.environ.get("CI"):
        raise RuntimeError("CI needs Debian's chromium for the dashboard test (.ci/run installs it)")
    pytest.skip("no Chromium on this machine: `apt-get install chromium` to run the dashboard test", allow_module_level=True)

from playwright.sync_api import expect, sync_playwright  # noqa: E402

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`shareflow serve` on the demo network: (base URL, keys by party name)."""
    workdir = tmp_path_factory.mktemp("dashboard")
    env = {**os.environ, "SHAREFLOW_DATABASE_URL": f"sqlite+aiosqlite:///{workdir}/shareflow.db"}
    for command in ("migrate", "demo"):
        assert shareflow(workdir, env, command).returncode == 0
    keys = json.loads((workdir / "shareflow-demo-keys.json").read_text())
    with serving(workdir, env) as url:
        record(url, keys["CityCar"], ["first"])  # one 30-minute rental: 9.70 through the chain
        yield url, keys


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield browser
        browser.close()


def record(url: str, key: str, keys: list[str]) -> None:
    now = datetime.now(UTC).replace(microsecond=0).isoformat()
    events = [
        {"idempotencyKey": k, "serviceId": "U2VydmljZTox", "consumerRef": "dash", "metric": metric, "quantity": quantity, "occurredAt": now}
        for k in keys
        for metric, quantity in (("minutes", "30"), ("rental", "1"))
        for k in [f"{k}-{metric}"]
    ]
    body = httpx.post(
        f"{url}/graphql",
        json={"query": "mutation($e: [UsageInput!]!) { recordUsage(events: $e) { accepted } }", "variables": {"e": events}},
        headers={"Authorization": f"Bearer {key}"},
    ).json()
    assert body["data"]["recordUsage"]["accepted"] == len(events), body


def sign_in(browser, url: str, key: str):
    page = browser.new_page()
    page.goto(f"{url}/dashboard")
    page.fill("#key", key)
    page.click("button[type=submit]")
    return page


def test_the_owner_sees_the_whole_chain_and_watches_it_change_live(demo, browser):
    url, keys = demo
    page = sign_in(browser, url, keys["MobilityHub"])
    sankey = page.locator("#sankey")
    for name in ("Consumers of Car sharing", "MobilityHub", "CityCar", "FleetCare", "ParkSpace", "HelpDesk24", "CallCenter Nord"):
        expect(sankey).to_contain_text(name, timeout=15_000)
    owner_net = page.locator("#statements tr[data-party='MobilityHub'] td").nth(4)
    expect(owner_net).to_have_text("0.66")
    expect(page.locator("#live")).to_have_text("● live", timeout=10_000)
    page.evaluate("window.__notReloaded = true")
    record(url, keys["CityCar"], ["second"])
    expect(owner_net).to_have_text("1.32", timeout=10_000)
    assert page.evaluate("window.__notReloaded") is True, "the page redrew without a reload"
    page.screenshot(path=str(Path(os.environ.get("DASHBOARD_SCREENSHOT", "/tmp/shareflow-dashboard.png"))))


def test_a_partner_sees_only_its_own_slice(demo, browser):
    url, keys = demo
    page = sign_in(browser, url, keys["HelpDesk24"])
    sankey = page.locator("#sankey")
    expect(sankey).to_contain_text("CallCenter Nord", timeout=15_000)
    expect(sankey).to_contain_text("MobilityHub")
    expect(sankey).not_to_contain_text("FleetCare")
    expect(sankey).not_to_contain_text("Consumers of")
    rows = page.locator("#statements tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-party", "HelpDesk24")


def test_a_wrong_key_is_told_so(demo, browser):
    url, _ = demo
    page = sign_in(browser, url, "sf_000000000000_wrong")
    expect(page.locator("#error")).to_contain_text("Sign-in failed")
    expect(page.locator("#content")).to_be_hidden()

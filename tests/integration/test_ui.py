"""The /ui dashboard in a real headless Chromium (the Debian package, driven by Playwright's
Python package; no browser is downloaded), against a real backend and worker."""

import contextlib
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Page, async_playwright, expect

from workfleet.client import Client
from workfleet.harness.cluster import Cluster, wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",  # tests run as root in CI containers, where the sandbox cannot start
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# read at import: an autouse fixture clears every WORKFLEET_* variable before each test
ARTIFACTS = os.environ.get("WORKFLEET_TEST_ARTIFACTS")
TIMEOUT_MS = 15_000

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="no /usr/bin/chromium: apt-get install chromium (.ci/run does)"
)


@contextlib.asynccontextmanager
async def chromium_page(profile: Path) -> AsyncIterator[Page]:
    """A page of a fresh headless Chromium with its own user data dir."""
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            profile,
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            yield context.pages[0] if context.pages else await context.new_page()
        finally:
            await context.close()


async def progressing(client: Client, operation_id: str) -> bool:
    op = await client.get(operation_id)
    return op.progress is not None and (op.progress.percentage or 0) > 0


async def holds_a_slot(client: Client, operation_id: str) -> bool:
    return (await client.get(operation_id)).worker_id is not None


async def connect(page: Page, key: str) -> None:
    await page.fill("#key", key)
    await page.click("#login-form button[type=submit]")


async def test_the_dashboard_shows_a_live_worker_progress_a_failure_reason_and_the_queue(
    cluster: Cluster, tmp_path: Path
) -> None:
    await cluster.start_worker("w1", slots=2)
    await cluster.wait_workers("w1")
    async with cluster.client() as client:
        noop = await client.submit("diagnostic", {"action": "noop"})
        failed = await client.submit("diagnostic", {"action": "fail", "payload": "ui"})
        for op in (noop, failed):
            await client.wait(op.operation_id, timeout_s=30)
        sleeper = await client.submit("diagnostic", {"action": "sleep", "seconds": 30, "steps": 30})
        await wait_for(lambda: progressing(client, sleeper.operation_id), what="progress")

        async with chromium_page(tmp_path / "profile") as page:
            problems: list[str] = []  # script errors, and anything our own CSP blocked
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.on("console", lambda message: problems.append(message.text))
            await page.goto(f"{cluster.url}/ui")

            await connect(page, "wf_not-a-key")
            await expect(page.locator("#auth-error")).to_contain_text("401", timeout=TIMEOUT_MS)
            await expect(page.locator("#dashboard")).to_be_hidden()

            await connect(page, cluster.admin_key)
            worker = page.locator('#workers tr[data-worker-id="w1"]')
            await expect(worker).to_contain_text("available", timeout=TIMEOUT_MS)
            await expect(worker).to_contain_text("1 / 2")
            bar = page.locator(f'#running tr[data-operation-id="{sleeper.operation_id}"] progress')
            await expect(bar).to_have_attribute("value", re.compile(r"^\d"), timeout=TIMEOUT_MS)
            assert float(await bar.get_attribute("value") or 0) > 0
            reason = page.locator(f'#history tr[data-operation-id="{failed.operation_id}"] .reason')
            await expect(reason).to_contain_text("DiagnosticFailure", timeout=TIMEOUT_MS)
            await expect(page.locator("#sum-workers")).to_have_text("1")
            await expect(page.locator("#auth-error")).to_be_hidden()
            await expect(page.locator("#sum-placement")).to_have_text("round_robin")
            await expect(page.locator("#queue-submitters tr.empty")).to_be_visible()

            # the second slot busy too, then three wait: two at priority 0, one at 7
            blocker = await client.submit("diagnostic", {"action": "sleep", "seconds": 30})
            await wait_for(lambda: holds_a_slot(client, blocker.operation_id), what="a slot")
            queued = [
                await client.submit("diagnostic", {"action": "noop"}, priority=priority)
                for priority in (0, 0, 7)
            ]
            submitter = page.locator(f'#queue-submitters tr[data-submitter="{queued[0].owner}"]')
            await expect(submitter.locator("td.count")).to_have_text("3", timeout=TIMEOUT_MS)
            await expect(submitter.locator("progress")).to_have_attribute("value", "3")
            by_priority = page.locator("#queue-priority tbody tr")
            await expect(by_priority).to_have_count(2)  # highest first, empty ones left out
            await expect(by_priority.nth(0)).to_have_attribute("data-priority", "7")
            await expect(by_priority.nth(0).locator("td.count")).to_have_text("1")
            await expect(by_priority.nth(1).locator("td.count")).to_have_text("2")
            await expect(page.locator("#sum-queue")).to_have_text("3")
            await save_screenshot(page, tmp_path / "ui.png")
        # the browser logs the refused key's 401 itself; nothing else may appear
        assert [p for p in problems if "status of 401" not in p] == []
        for op in [*queued, blocker, sleeper]:  # the waiting ones first: nothing starts
            await client.cancel(op.operation_id)


async def save_screenshot(page: Page, path: Path) -> None:
    await page.screenshot(path=path, full_page=True)
    if ARTIFACTS:
        Path(ARTIFACTS).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(ARTIFACTS) / path.name)

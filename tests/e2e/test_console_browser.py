"""The console in a real browser: headless Chromium (Debian's package) driven by Playwright,
against a real server on 127.0.0.1. Signs in, finds a parked delivery, dry-runs and replays it,
sees it processed, finds a prescription and reads its timeline, pauses a subscription, and
watches the overview update live; by keyboard where it matters. Every page is checked for
unlabelled inputs and script errors, and the test fails if a page asks for anything outside
127.0.0.1. Screenshots are kept in tests/artifacts/console/ (or DRX_CONSOLE_SCREENSHOTS).

Without /usr/bin/chromium the test is skipped, except under CI=true, where that is a failure
(`.ci/run` installs it)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from domain.commands import ParkDelivery
from tests.e2e.test_change_stream import InProcess
from tests.helpers import API_KEY, command_for, load_example

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
SHOTS = Path(os.environ.get("DRX_CONSOLE_SCREENSHOTS", ROOT / "tests" / "artifacts" / "console"))
REASON = "test: a fault of ours, since fixed"
WAIT_MS = 15_000

UNLABELLED = """() => [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
  .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
  .map(e => e.outerHTML)"""
NAMELESS = """() => [...document.querySelectorAll('a, button')]
  .filter(e => !e.textContent.trim() && !e.getAttribute('aria-label')).map(e => e.outerHTML)"""


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return CHROMIUM


@pytest.fixture
def served(tmp_path) -> Iterator[InProcess]:
    server = InProcess(tmp_path)
    yield server
    server.stop()


class Visit:
    """A browser page that records what it asked outside 127.0.0.1 and its script errors."""

    def __init__(self, context, base: str) -> None:
        self.base, self.outside, self.errors = base, [], []
        context.route("**/*", self._route)
        self.page = context.new_page()
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def _route(self, route) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            self.outside.append(route.request.url)
            route.abort()

    def check(self, name: str) -> None:
        """This page's labels, then its screenshot."""
        assert self.page.evaluate(UNLABELLED) == [], name
        assert self.page.evaluate(NAMELESS) == [], name
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def tab_to(page, text: str, limit: int = 60) -> None:
    """Press Tab until the focused element says `text`, and only that."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if page.evaluate("() => (document.activeElement.textContent || '').trim()") == text:
            return
    raise AssertionError(f"Tab never reached {text!r}")


def seed(server: InProcess) -> None:
    parts = server.app.state.parts
    assert server.deliver(load_example("received")) == 202
    shipped = command_for(load_example("shipped"))
    parts.intake.take(ParkDelivery(shipped.delivery, REASON))
    parts.subscriptions.create("http://127.0.0.1:9/hook", description="the ward's display")
    parts.projector.catch_up()


def test_the_console_in_chromium(chromium, served):
    from playwright.sync_api import expect, sync_playwright

    seed(served)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        visit = Visit(context, served.url)
        page = visit.page
        expect.set_options(timeout=WAIT_MS)

        # Sign in, by keyboard: the key field has the focus, Enter submits.
        page.goto(f"{served.url}/console")
        expect(page).to_have_url(f"{served.url}/console/sign-in")
        visit.check("sign-in")
        page.keyboard.type(API_KEY)
        page.keyboard.press("Enter")
        expect(page).to_have_url(f"{served.url}/console")
        expect(page.get_by_role("heading", name="Overview", exact=True)).to_be_visible()
        expect(page.locator(".tile", has_text="Parked deliveries")).to_contain_text("1")
        visit.check("overview")

        # Live: a new delivery shows in the chart without a reload.
        assert served.deliver(load_example("dispensed")) == 202
        expect(page.locator("figcaption")).to_contain_text("accepted 2", timeout=WAIT_MS)

        # The parked delivery's group, reached by keyboard, its dry run, its replay.
        page.get_by_role("link", name="Parked", exact=True).click()
        visit.check("parked")
        tab_to(page, REASON)
        page.keyboard.press("Enter")
        expect(page.get_by_role("heading", name="Parked for one reason")).to_be_visible()
        page.get_by_role("button", name="Dry run").click()
        preview = page.get_by_role("table", name="What a replay would do, per delivery")
        expect(preview).to_contain_text("processed")
        expect(preview).to_contain_text("shipped")
        visit.check("dry-run")
        page.get_by_role("button", name="Replay these 1").click()
        expect(page.get_by_role("table", name="Replays")).to_contain_text("processed")
        page.get_by_role("link", name="evt_example_shipped").click()
        expect(page.locator(".facts")).to_contain_text("processed")
        # Stored by the test with made-up signature headers, not signed by "DRx":
        expect(page.locator(".facts")).to_contain_text("does not verify with any configured")
        visit.check("delivery")

        # A prescription, found by its id: the timeline in fact order.
        page.get_by_role("link", name="Prescriptions", exact=True).click()
        page.get_by_label("Find by").select_option("prescription")
        page.get_by_label("Id").fill("drx_rx_7Q2M9K")
        page.get_by_label("Id").press("Enter")
        timeline = page.get_by_role("list", name="Facts in fact order")
        expect(timeline.locator("li")).to_have_count(3)
        expect(timeline.locator("li").first).to_contain_text("drx.prescription.received")
        expect(timeline.locator("li").last).to_contain_text("drx.prescription.shipped")
        received = page.locator("details", has_text="drx.prescription.received")
        expect(received).to_contain_text("signature verified")
        visit.check("prescription")

        # A subscription, paused.
        page.get_by_role("link", name="Subscriptions", exact=True).click()
        page.get_by_role("button", name="Pause").click()
        expect(page.get_by_role("status")).to_contain_text("is paused")
        expect(page.get_by_role("button", name="Resume")).to_be_visible()
        visit.check("subscriptions")

        # Narrow: the overview and the prescription at 390 px, without sideways scrolling.
        page.set_viewport_size({"width": 390, "height": 844})
        for name, path in (
            ("overview-390", "/console"),
            ("prescription-390", "/console/prescription?id=drx_rx_7Q2M9K"),
        ):
            page.goto(served.url + path)
            width = page.evaluate("() => document.documentElement.scrollWidth")
            assert width <= 390, f"{name} is {width} px wide"
            visit.check(name)

        browser.close()
    assert visit.outside == []
    assert visit.errors == []
    assert served.app.state.parts.subscriptions.all()[0].state == "paused"

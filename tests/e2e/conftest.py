"""Browser fixtures: Debian's Chromium driven by Playwright, one fresh profile per test.

Playwright's own browser downloads are never used (no ``playwright install``): the system Chromium
is the browser under test. A missing Chromium fails the run; it never skips.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, ConsoleMessage, Page, sync_playwright

CHROMIUM = os.environ.get("SIDECAR_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@dataclass
class Browser:
    """A page plus everything the browser complained about (CSP violations, script errors)."""

    context: BrowserContext
    page: Page
    problems: list[str] = field(default_factory=list)

    def screenshot(self, name: str, *, full_page: bool = True) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        return path


@pytest.fixture
def browser(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Browser]:
    """A fresh Chromium profile. Indirect parameters: ``javascript`` (bool), ``color_scheme``."""
    options = getattr(request, "param", {})
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"Chromium not found at {CHROMIUM} (apt-get install chromium)", pytrace=False)
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1024, "height": 800},
            locale="en-US",
            java_script_enabled=options.get("javascript", True),
            color_scheme=options.get("color_scheme", "light"),
        )
        page = context.pages[0] if context.pages else context.new_page()
        page.set_default_timeout(15_000)
        state = Browser(context=context, page=page)

        def on_console(message: ConsoleMessage) -> None:
            if message.type in ("error", "warning"):
                state.problems.append(f"{message.type}: {message.text} ({message.location.get('url')})")

        page.on("console", on_console)
        page.on("pageerror", lambda exc: state.problems.append(f"pageerror: {exc}"))
        try:
            yield state
        finally:
            context.close()

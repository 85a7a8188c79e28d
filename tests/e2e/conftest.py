"""Browser fixtures: Debian's Chromium driven by Playwright, one browser per module and a fresh
context (profile) per test, and the sites it visits: the shipped public app served from a thread.

Playwright's own browser downloads are never used (no ``playwright install``): the system Chromium
is the browser under test. A missing Chromium fails the run; it never skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from playwright.sync_api import Browser as PlaywrightBrowser
from playwright.sync_api import BrowserContext, ConsoleMessage, Page, sync_playwright
from starlette.types import ASGIApp

from sidecar.config.model import Config
from tests.conftest import free_port, make_config
from tests.mail import SmtpServer

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


@pytest.fixture(scope="module")
def chromium() -> Iterator[PlaywrightBrowser]:
    """One Chromium (and one Playwright driver) per test module; each test gets a context of its
    own in it (``browser``). A launch costs about a second of CPU, a context a fraction of that."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"Chromium not found at {CHROMIUM} (apt-get install chromium)", pytrace=False)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def browser(request: pytest.FixtureRequest, chromium: PlaywrightBrowser) -> Iterator[Browser]:
    """A fresh browser profile: a new context (cookies, storage, cache and permissions of its own,
    as in a new incognito window). Indirect parameters: ``javascript`` (bool), ``color_scheme``,
    ``locale`` (the browser's language, sent as ``Accept-Language``)."""
    options = getattr(request, "param", {})
    context = chromium.new_context(
        viewport={"width": 1024, "height": 800},
        locale=options.get("locale", "en-US"),
        java_script_enabled=options.get("javascript", True),
        color_scheme=options.get("color_scheme", "light"),
    )
    page = context.new_page()
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


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpServer]:
    """A mail catcher for one test module."""
    server = SmtpServer(free_port())
    server.start()
    yield server
    server.stop()


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the test runner owns the signals


@contextlib.contextmanager
def serve(port: int, make_app: Callable[[], contextlib.AbstractAsyncContextManager[Any]]) -> Iterator[None]:
    """Serve ``make_app()``'s app on 127.0.0.1:``port`` from a thread with its own event loop.

    The app is built (and torn down) on the serving loop, so pools and clients live where used.
    """
    box: dict[str, Any] = {}
    ready = threading.Event()

    async def main() -> None:
        async with make_app() as app:
            cfg = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
            server = box["server"] = _Server(cfg)
            task = asyncio.create_task(server.serve())
            while not server.started and not task.done():
                await asyncio.sleep(0.01)
            ready.set()
            await task

    def target() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # surface start-up failures to the test
            box["error"] = exc
            ready.set()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    if not ready.wait(30) or "error" in box or not box["server"].started:
        raise RuntimeError(f"test server did not start: {box.get('error')!r}")
    try:
        yield
    finally:
        box["server"].should_exit = True
        thread.join(15)


def site_config(
    tmp_path: Path,
    port: int,
    *,
    host: str = "127.0.0.1",
    selfservice: dict[str, Any] | None = None,
    **overrides: Any,
) -> Config:
    """A dev config for the public app on ``port``, reached as ``http://<host>:<port>/.auth``."""
    origin = f"http://{host}:{port}"
    base = f"{origin}/.auth"
    return make_config(
        dev=True,
        dsn=f"sqlite:///{tmp_path}/sidecar.db",
        serve={"public": {"base_url": base, "host": "127.0.0.1", "port": port}},
        selfservice={
            "default_browser_return_url": f"{base}/ui/welcome",
            "allowed_return_urls": [f"{origin}/"],
            **(selfservice or {}),
        },
        **overrides,
    )


@contextlib.contextmanager
def serve_public_app(config: Config) -> Iterator[None]:
    """The shipped public app for ``config``, on its port, with migrated storage."""
    from sidecar.app import build_services, create_public_app

    @contextlib.asynccontextmanager
    async def make_app() -> AsyncIterator[ASGIApp]:
        services = build_services(config)
        await services.database.migrate()
        await services.start()
        try:
            yield create_public_app(services, manage_lifespan=False)
        finally:
            await services.stop()

    with serve(config.serve.public.port, make_app):
        yield

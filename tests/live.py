"""A real sidecar (public + admin listeners) on free 127.0.0.1 ports, in a background thread.

The thread owns its event loop, so services (database pools, Redis clients) live on the loop
that serves them, and tests may use blocking clients such as the official Kratos SDK.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn

from sidecar.config.model import Config
from tests.conftest import free_port


@dataclass
class LiveSidecar:
    public_url: str  # includes the prefix, e.g. http://127.0.0.1:PORT/.auth
    admin_url: str
    root_url: str  # the public listener without prefix (proxied paths)
    services: Any
    loop: asyncio.AbstractEventLoop

    def run(self, coro: Any, timeout: float = 30) -> Any:
        """Run a coroutine on the server's loop (e.g. to reach a store directly)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)


class _Quiet(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.contextmanager
def live_sidecar(config: Config, *, public_port: int | None = None) -> Iterator[LiveSidecar]:
    from sidecar.app import build_services, create_admin_app, create_public_app

    public_port = public_port or free_port()
    admin_port = free_port()
    prefix = config.serve.public.prefix
    overrides = {
        "serve": config.serve.model_copy(
            update={
                "public": config.serve.public.model_copy(
                    update={
                        "port": public_port,
                        "host": "127.0.0.1",
                        "base_url": f"http://127.0.0.1:{public_port}{prefix}",
                    }
                ),
                "admin": config.serve.admin.model_copy(update={"port": admin_port, "host": "127.0.0.1"}),
            }
        )
    }
    config = config.model_copy(update=overrides)
    ready = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        services = build_services(config)
        await services.database.migrate()
        await services.start()
        servers = []
        for app, port in (
            (create_public_app(services, manage_lifespan=False), public_port),
            (create_admin_app(services, manage_lifespan=False), admin_port),
        ):
            cfg = uvicorn.Config(
                app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", proxy_headers=False
            )
            servers.append(_Quiet(cfg))
        box["services"], box["servers"], box["loop"] = services, servers, asyncio.get_running_loop()
        tasks = [asyncio.create_task(s.serve()) for s in servers]
        while not all(s.started for s in servers):
            await asyncio.sleep(0.01)
        ready.set()
        try:
            await asyncio.gather(*tasks)
        finally:
            await services.stop()

    def target() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # surface start-up failures to the test
            box["error"] = exc
            ready.set()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    if not ready.wait(30) or "error" in box:
        raise RuntimeError(f"sidecar did not start: {box.get('error')!r}")
    try:
        yield LiveSidecar(
            public_url=f"http://127.0.0.1:{public_port}{prefix}",
            admin_url=f"http://127.0.0.1:{admin_port}",
            root_url=f"http://127.0.0.1:{public_port}",
            services=box["services"],
            loop=box["loop"],
        )
    finally:
        for s in box["servers"]:
            s.should_exit = True
        thread.join(15)

"""Health and version endpoints, served on both listeners."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sidecar import __version__, errors
from sidecar.api.respond import json_response

Check = Callable[[], Awaitable[None]]


def health_routes(checks: dict[str, Check], *, ready: Callable[[], bool] = lambda: True) -> list[Route]:
    async def alive(request: Request) -> Response:
        return json_response({"status": "ok"})

    async def readiness(request: Request) -> Response:
        if not ready():
            return json_response({"errors": {"shutdown": "the server is shutting down"}}, 503)
        failures: dict[str, str] = {}

        async def run(name: str, check: Check) -> None:
            try:
                await asyncio.wait_for(check(), timeout=2)
            except (errors.SidecarError, TimeoutError, OSError) as exc:
                failures[name] = str(exc) or type(exc).__name__

        await asyncio.gather(*(run(n, c) for n, c in checks.items()))
        if failures:
            return json_response({"errors": failures}, 503)
        return json_response({"status": "ok"})

    async def version(request: Request) -> Response:
        return json_response({"version": f"v{__version__}"})

    return [
        Route("/health/alive", alive, methods=["GET", "HEAD"]),
        Route("/health/ready", readiness, methods=["GET", "HEAD"]),
        Route("/version", version, methods=["GET"]),
    ]

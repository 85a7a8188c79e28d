"""The benchmark's upstream app: the smallest ASGI app, a fixed 200 (DESIGN §6 calibration)."""

from __future__ import annotations

from typing import Any

_START = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"3")]}
_BODY = {"type": "http.response.body", "body": b"ok\n"}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await send(_START)
        await send(_BODY)

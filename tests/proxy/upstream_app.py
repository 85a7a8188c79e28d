"""The upstream app the proxy tests talk to, served by a real uvicorn process.

``/upload`` counts streamed bytes, ``/download?size=N`` streams N bytes, ``/slow?delay=S`` sleeps,
``/ws`` echoes WebSocket messages; everything else echoes the request as JSON.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import parse_qs

CHUNK = b"x" * 65536


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept", "subprotocol": (scope.get("subprotocols") or [None])[0]})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": "echo:" + (message.get("text") or "")})
    query = parse_qs(scope["query_string"].decode())
    path = scope["path"]
    received = 0
    more = True
    while more:
        message = await receive()
        received += len(message.get("body", b""))
        more = message.get("more_body", False)
    if path == "/download":
        size = int(query["size"][0])
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(size).encode())],
            }
        )
        sent = 0
        while sent < size:
            piece = CHUNK[: min(len(CHUNK), size - sent)]
            sent += len(piece)
            await send({"type": "http.response.body", "body": piece, "more_body": sent < size})
        return
    if path == "/slow":
        await asyncio.sleep(float(query["delay"][0]))
    doc = {
        "method": scope["method"],
        "path": path,
        "raw_path": (scope.get("raw_path") or b"").decode("latin-1"),
        "query": scope["query_string"].decode("latin-1"),
        "received": received,
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
    }
    body = json.dumps(doc).encode()
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": body})

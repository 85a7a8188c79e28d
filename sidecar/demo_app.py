"""A tiny upstream app for the quickstart: shows the request headers it received.

Plain ASGI, no framework. Browsers get an HTML table, anything else JSON; ``/ws`` is a WebSocket
echo. Run it behind the sidecar (``proxy.upstream: http://127.0.0.1:8080``)::

    python -m sidecar.demo_app --port 8080      (or: sidecar demo, which runs both)
"""

from __future__ import annotations

import argparse
import html
import json
from typing import Any

Scope = dict[str, Any]


def _headers(scope: Scope) -> list[tuple[str, str]]:
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope["headers"]]


def _page(scope: Scope, headers: list[tuple[str, str]]) -> bytes:
    user = next((v for k, v in headers if k.lower() == "x-user-id"), None)
    rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in headers)
    who = f"signed in as <b>{html.escape(user)}</b>" if user else "anonymous"
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>sidecar demo app</title></head><body>"
        f"<h1>Demo upstream</h1><p>{html.escape(scope['method'])} {html.escape(scope['path'])}: {who}</p>"
        '<p><a href="/.auth/ui/welcome">your account and sign out</a></p>'
        f"<table border=1><tr><th>header</th><th>value</th></tr>{rows}</table></body></html>"
    ).encode()


async def app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send(
                {"type": "websocket.send", "text": message.get("text") or "", "bytes": message.get("bytes")}
            )
    headers = _headers(scope)
    more = True
    while more:  # drain the body
        message = await receive()
        more = message.get("more_body", False)
    accept = next((v for k, v in headers if k.lower() == "accept"), "")
    if "text/html" in accept:
        body, ctype = _page(scope, headers), b"text/html; charset=utf-8"
    else:
        doc = {"method": scope["method"], "path": scope["path"], "headers": headers}
        body, ctype = json.dumps(doc, indent=1).encode(), b"application/json"
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", ctype)]})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()

"""An outgoing HTTP request built from Kratos' ``httpRequestConfig`` (``request/builder.go``): the
headers (canonical names, JSON by default, ``api_key`` in a header or cookie, ``basic_auth``) and
the body (a Jsonnet snippet called with ``ctx``, sent as JSON or, with ``Content-Type:
application/x-www-form-urlencoded``, as a form).

Web hooks (``webhooks/runner.py``) and the HTTP courier (``courier/http.py``) both send what this
builds, as in Kratos, so a config means the same on either; each keeps its own rule for when a
method carries a body and what a failing snippet means (a skipped call, a 500, a dead message).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol
from urllib.parse import urlencode

import httpx

from sidecar.config.webhook import WebHookAuth
from sidecar.security import jsonnet

BODY_TIMEOUT = 2.0
"""How long a body snippet may run."""


class RequestConfig(Protocol):
    """What ``WebHookConfig`` and ``HttpRequestConfig`` share."""

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def auth(self) -> WebHookAuth | None: ...


def canonical(name: str) -> str:
    """Go's ``http.CanonicalHeaderKey``: ``x-api-key`` → ``X-Api-Key``."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def headers(config: RequestConfig) -> dict[str, str]:
    """The configured headers with canonical names, ``Content-Type: application/json`` unless one
    is set, and the credentials of ``auth``."""
    out = {canonical(k): v for k, v in config.headers.items()}
    out.setdefault("Content-Type", "application/json")
    if config.auth is not None:
        cfg = config.auth.config
        if config.auth.type == "basic_auth":
            out["Authorization"] = httpx.BasicAuth(cfg["user"], cfg["password"])._auth_header
        elif cfg.get("in", "header") == "cookie":
            out["Cookie"] = f"{cfg['name']}={cfg['value']}"
        else:
            out[canonical(cfg["name"])] = cfg["value"]
    return out


async def body(sandbox: jsonnet.JsonnetSandbox, source: str, ctx: Any, content_type: str) -> bytes:
    """The body ``source`` (Jsonnet) makes of ``ctx``; raises ``jsonnet.JsonnetError``."""
    out = await sandbox.evaluate(source, tla={"ctx": ctx}, timeout=BODY_TIMEOUT, name="body.jsonnet")
    if content_type.startswith("application/x-www-form-urlencoded"):
        # Kratos decodes the result into map[string]string: a null is an empty value.
        pairs = out.items() if isinstance(out, dict) else ()
        return urlencode({k: "" if v is None else str(v) for k, v in pairs}).encode()
    return json.dumps(out, separators=(",", ":")).encode()

"""``selfservice.languages.translate_api``: the API's message texts in the request's language.

Off by default, as in Kratos: SDKs and Ory's UIs key on message ids, and the English ``text`` is
the contract. When on, this wrapper rewrites the ``text`` of every ``uiText`` (``id``, ``text``,
``type``) in a JSON answer under ``{prefix}/self-service/``, in the language of ``Accept-Language``,
else the ``?lang=`` cookie of the built-in pages, else the default. Ids and context stay as they are.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from sidecar.config.model import Languages
from sidecar.flows.messages import localise
from sidecar.i18n import Catalogs, Translator, negotiate

_TEXT_TYPES = frozenset({"info", "error", "success"})


def _translate(value: Any, tr: Translator) -> Any:
    if isinstance(value, list):
        return [_translate(v, tr) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _translate(v, tr) for k, v in value.items()}
    if isinstance(out.get("id"), int) and isinstance(out.get("text"), str) and out.get("type") in _TEXT_TYPES:
        out["text"] = localise(out, tr)
    return out


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


class ApiLanguages:
    """Raw-ASGI wrapper of the public app (only installed when ``translate_api`` is on)."""

    def __init__(self, app: Any, *, catalogs: Catalogs, languages: Languages, prefix: str) -> None:
        self.app = app
        self.catalogs = catalogs
        self.languages = languages
        self.path = f"{prefix.rstrip('/')}/self-service/"

    def language(self, scope: Any) -> str:
        headers = {k.lower(): v.decode("latin-1") for k, v in scope.get("headers", ())}
        return negotiate(
            self.catalogs,
            default=self.languages.default,
            accept=headers.get(b"accept-language"),
            chosen=_cookie(headers.get(b"cookie", ""), self.languages.cookie),
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.path):
            await self.app(scope, receive, send)
            return
        language = self.language(scope)
        if language == "en":
            await self.app(scope, receive, send)
            return
        tr = self.catalogs.translator(language)
        start: dict[str, Any] | None = None
        chunks: list[bytes] = []

        async def translated(message: Any) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                content_type = dict(message.get("headers", ())).get(b"content-type", b"")
                if content_type.startswith(b"application/json"):
                    start = message
                    return
                await send(message)
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = b"".join(chunks)
            with contextlib.suppress(ValueError):  # not JSON after all: passed on as it is
                body = json.dumps(_translate(json.loads(body), tr), separators=(",", ":")).encode()
            headers = [(k, v) for k, v in start.get("headers", ()) if k.lower() != b"content-length"]
            headers += [
                (b"content-length", str(len(body)).encode()),
                (b"content-language", language.encode()),
            ]
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, translated)

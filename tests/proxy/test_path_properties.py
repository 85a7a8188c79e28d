"""Properties of the access path (DESIGN §5.1), by hypothesis over hostile raw paths.

- normalising twice changes nothing;
- nothing is decoded twice: one percent-decode of the normalised path is one percent-decode of
  the raw path, dot segments and duplicate slashes resolved;
- the forwarded path is the matched path: through the real gateway and rules, what reaches the
  upstream is exactly the path the rule matched, and a path no allow-rule matches never does.
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sidecar.app import build_gateway
from sidecar.proxy.gateway import Gateway
from sidecar.proxy.paths import BadPath, _remove_dot_segments, normalise_path
from sidecar.rules.holder import RulesHolder
from sidecar.session.resolver import SessionResolver
from tests.conftest import make_config

PIECES = [
    "/", "//", ".", "..", "public", "private", "a", "~", "@", ":", ";", "!", "'", "x y",
    "%2e", "%2E", "%2e%2e", ".%2e", "%41", "%7e", "%7E", "%61dmin", "%20", "%3b", "%3B",
    "%c3%a9", "%C3%A9", "%e2%82%ac", "%C0%AF", "%c0%ae", "%FF", "%ED%A0%80", "%F4%90%80%80",
    "%25", "%2541", "%252e", "%2f", "%2F", "%5c", "%00", "%0d%0a", "%", "%4", "%zz", "\\", "\x7f",
    "\xe9",
]  # fmt: skip
RAW_PATHS = st.lists(st.sampled_from(PIECES) | st.text("abc/.%", max_size=4), max_size=12).map(
    lambda parts: ("/" + "".join(parts)).encode("latin-1")
)


def decoded_once(raw: bytes) -> bytes:
    return unquote_to_bytes(raw)


@settings(max_examples=1500, deadline=None)
@given(RAW_PATHS)
@example(b"/public/%2e%2e/private")
@example(b"/public/%252e%252e/private")
@example(b"/a%C0%AF")
@example(b"/%25%341")  # %25 then escaped hex digits: "%41" after one decode, "A" after two
def test_normalising_twice_changes_nothing_and_nothing_is_decoded_twice(raw: bytes) -> None:
    for reject in (True, False):
        try:
            once = normalise_path(raw, reject_parameters=reject)
        except BadPath:
            continue
        assert once.isascii() and once.startswith("/") and "//" not in once
        assert not {"", ".", ".."} & set(once.split("/")[1:-1])
        assert normalise_path(once.encode(), reject_parameters=reject) == once
        # One decode of what we forward == one decode of what came in, dots resolved.
        expected = _remove_dot_segments(decoded_once(raw).decode("latin-1")).encode("latin-1")
        assert decoded_once(once.encode()) == expected
        # What we forward is valid UTF-8 once decoded, with no control characters in it.
        text = decoded_once(once.encode()).decode("utf-8")
        assert not any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in text)


RULES = """version: 1
rules:
  - id: public
    match: {paths: ["/public/**"]}
    require: public
  - id: rest
    match: {paths: ["/**"]}
    require: deny
"""


class RecordingUpstream:
    name = "recording"

    def __init__(self) -> None:
        self.targets: list[bytes] = []

    async def forward(
        self, method: str, base: str, target: bytes, headers: Any, has_body: bool, receive: Any, send: Any
    ) -> None:
        self.targets.append(target)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> tuple[Gateway, RecordingUpstream]:
    rules = Path(tmp_path_factory.mktemp("rules")) / "rules.yaml"
    rules.write_text(RULES)
    config = make_config(rules=[str(rules)], proxy={"upstream": "http://upstream.invalid"})
    holder = RulesHolder(config.rules)
    holder.load()
    upstream = RecordingUpstream()
    # Anonymous requests never reach the session stores.
    resolver = SessionResolver(cast(Any, None), cast(Any, None), ttl=config.session.cache_ttl)

    async def public_app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("no path here is under the prefix")

    built = build_gateway(config, public_app, resolver=resolver, rules=holder, upstream=upstream)
    built._started = True  # no rules watcher: nothing changes while hypothesis runs
    return built, upstream


async def _call(app: Gateway, raw: bytes) -> tuple[int, dict[str, Any]]:
    scope: dict[str, Any] = {
        "type": "http",
        "method": "GET",
        "path": decoded_once(raw).decode("latin-1"),
        "raw_path": raw,
        "query_string": b"",
        "headers": [(b"host", b"app.test"), (b"accept", b"application/json")],
        "client": ("192.0.2.1", 40000),
        "scheme": "http",
    }
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status, scope


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=RAW_PATHS)
@example(raw=b"/public/%2e%2e/private")
@example(raw=b"/public/..%2fprivate")
@example(raw=b"/public/x%C0%AF..%C0%AFprivate")
@example(raw=b"/private/../public/x")
def test_the_forwarded_path_is_the_matched_path(
    gateway: tuple[Gateway, RecordingUpstream], raw: bytes
) -> None:
    app, upstream = gateway
    before = len(upstream.targets)
    status, scope = asyncio.run(_call(app, raw))
    forwarded = upstream.targets[before:]
    try:
        path = normalise_path(raw)
    except BadPath:
        assert status == 400 and forwarded == []
        return
    rule = app.access.rules.current.match("GET", "app.test", path)
    if rule is not None and rule.id == "public":
        assert status == 200 and forwarded == [path.encode()]
        assert scope["sidecar.path"] == path and scope["sidecar.rule"] == "public"
    else:
        assert status == 403 and forwarded == []

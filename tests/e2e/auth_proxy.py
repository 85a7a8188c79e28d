"""What every reverse proxy that asks the sidecar (nginx ``auth_request``, Caddy ``forward_auth``)
must do: send browsers to login, answer API clients 401, pass the identity, drop spoofed headers."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sidecar.identity.model import Identity
from tests.proxy.harness import (
    Proc,
    Sidecar,
    echoed,
    get,
    header_values,
    make_user,
    sidecar_server,
    upstream_server,
)

RULES = """
version: 1
rules:
  - id: public
    match: { paths: ["/public/**"] }
    require: public
  - id: private
    match: { paths: ["/private/**"] }
    require: authenticated
"""


@contextlib.contextmanager
def proxied_stack(
    tmp: Path, proxy_server: Callable[[Path, str], contextlib.AbstractContextManager[Proc]], config: str
) -> Iterator[tuple[Sidecar, Proc]]:
    """An upstream and a sidecar with ``RULES``, behind the proxy configured by ``config`` (a
    template with ``{sidecar}`` and ``{upstream}`` ports)."""
    (tmp / "rules.yaml").write_text(RULES)
    with (
        upstream_server() as upstream,
        sidecar_server(tmp, rules=[str(tmp / "rules.yaml")]) as sidecar,
        proxy_server(tmp, config.format(sidecar=sidecar.proc.port, upstream=upstream.port)) as proxy,
    ):
        yield sidecar, proxy


@contextlib.contextmanager
def example_stack(
    tmp: Path,
    proxy_server: Callable[[Path, Callable[[int], str]], contextlib.AbstractContextManager[Proc]],
    render: Callable[[int, int, int], str],
) -> Iterator[tuple[Sidecar, Proc]]:
    """As ``proxied_stack``, for a whole shipped config file: ``render(sidecar, upstream, proxy)``
    turns the example into this run's config (its ports swapped for free ones, nothing else)."""
    (tmp / "rules.yaml").write_text(RULES)
    with (
        upstream_server() as upstream,
        sidecar_server(tmp, rules=[str(tmp / "rules.yaml")]) as sidecar,
        proxy_server(tmp, lambda port: render(sidecar.proc.port, upstream.port, port)) as proxy,
    ):
        yield sidecar, proxy


def replace_once(text: str, old: str, new: str) -> str:
    """``text`` with ``old`` replaced; fails when the example no longer has exactly one ``old``."""
    assert text.count(old) == 1, f"expected exactly one {old!r} in the example"
    return text.replace(old, new)


def assert_browser_sent_to_login(sidecar: Sidecar, proxy: Proc) -> None:
    status, headers, _ = get(
        proxy.port, "/private/page?x=1", {"Accept": "text/html", "Sec-Fetch-Mode": "navigate"}
    )
    assert status == 302
    location = urlsplit(headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == (
        sidecar.config.public_base_url + "/self-service/login/browser"
    )
    assert parse_qs(location.query)["return_to"] == [f"http://127.0.0.1:{proxy.port}/private/page?x=1"]


def assert_api_client_gets_401(proxy: Proc) -> bytes:
    """The 401's body, for checks of what the proxy passes on."""
    status, headers, body = get(proxy.port, "/private/page", {"Accept": "application/json"})
    assert status == 401
    assert headers["www-authenticate"].startswith("Bearer")
    return body


async def assert_identity_reaches_upstream(sidecar: Sidecar, proxy: Proc) -> tuple[Identity, dict[str, Any]]:
    """The signed-in identity and the request the upstream saw."""
    identity, _, token = await make_user(sidecar.config)
    status, _, body = get(proxy.port, "/private/page", {"Cookie": f"ory_kratos_session={token}"})
    assert status == 200, body
    doc = echoed(body)
    assert header_values(doc, "x-user-id") == [str(identity.id)]
    assert header_values(doc, "x-user-aal") == ["aal1"]
    return identity, doc


async def assert_spoofed_user_id_dropped(sidecar: Sidecar, proxy: Proc, name: str) -> None:
    status, _, body = get(proxy.port, "/public/page", [(name, "evil"), (name, "evil2")])
    assert status == 200
    assert not any("evil" in v for _, v in echoed(body)["headers"])
    identity, _, token = await make_user(sidecar.config, email=f"spoof-{name}@example.com")
    status, _, body = get(proxy.port, "/private/page", [(name, "evil"), ("X-Session-Token", token)])
    assert status == 200
    doc = echoed(body)
    assert header_values(doc, "x-user-id") == [str(identity.id)]
    assert not any("evil" in v for _, v in doc["headers"])

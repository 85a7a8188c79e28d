"""WebSockets through the proxy: session checked on upgrade, Origin checked, closed on revocation."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.proxy.harness import make_user, revoke, sidecar_server, upstream_server

RULES = """
version: 1
rules:
  - {id: ws, match: {paths: [/ws]}, require: authenticated}
  - {id: open, match: {paths: [/open-ws]}, require: public}
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    tmp = tmp_path_factory.mktemp("ws")
    (tmp / "rules.yaml").write_text(RULES)
    with (
        upstream_server() as upstream,
        sidecar_server(tmp, proxy={"upstream": upstream.url}, rules=[str(tmp / "rules.yaml")]) as sidecar,
    ):
        yield sidecar


def url(stack: Any, path: str = "/ws") -> str:
    return f"ws://127.0.0.1:{stack.proc.port}{path}"


async def test_signed_in_websocket_is_proxied(stack: Any) -> None:
    _, _, token = await make_user(stack.config)
    headers = {"Cookie": f"ory_kratos_session={token}"}
    async with websockets.connect(url(stack), additional_headers=headers, subprotocols=["chat"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "chat"
        await ws.send("hello")
        assert await ws.recv() == "echo:hello"


async def test_anonymous_upgrade_is_refused(stack: Any) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(url(stack)):
            pass
    assert info.value.response.status_code == 401
    async with websockets.connect(url(stack, "/open-ws")) as ws:
        await ws.send("x")
        assert await ws.recv() == "echo:x"


async def test_foreign_origin_is_refused(stack: Any) -> None:
    _, _, token = await make_user(stack.config, email="origin@example.com")
    headers = {"Cookie": f"ory_kratos_session={token}"}
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(url(stack), additional_headers=headers, origin="http://evil.example"):  # type: ignore[arg-type]
            pass
    assert info.value.response.status_code == 403
    own = f"http://127.0.0.1:{stack.proc.port}"
    async with websockets.connect(url(stack), additional_headers=headers, origin=own) as ws:  # type: ignore[arg-type]
        await ws.send("ok")
        assert await ws.recv() == "echo:ok"


async def test_socket_is_closed_when_the_session_is_revoked(stack: Any) -> None:
    _, session, token = await make_user(stack.config, email="revoked@example.com")
    async with websockets.connect(url(stack), additional_headers={"X-Session-Token": token}) as ws:
        await ws.send("before")
        assert await ws.recv() == "echo:before"
        await revoke(stack.config, session)
        # SQL mode: the revocation poller runs every second.
        with pytest.raises(ConnectionClosed) as info:
            async with asyncio.timeout(5):
                while True:
                    await ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1008

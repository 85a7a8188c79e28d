"""WebSockets through the proxy: session checked on upgrade, Origin checked, closed on revocation;
``sidecar serve`` under each HTTP server (``serve.<listener>.server``)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from sidecar.config.loader import deep_merge, load_config
from sidecar.config.model import Config
from tests.ops.serve import SERVERS, base_config, migrate, on_server, ports, running, serve_argv, write_config
from tests.proxy.harness import make_user, revoke, upstream_server

RULES = """
version: 1
rules:
  - {id: ws, match: {paths: [/ws]}, require: authenticated}
  - {id: open, match: {paths: [/open-ws]}, require: public}
"""


@dataclass
class Stack:
    port: int
    config: Config  # what ``sidecar serve`` loaded: make_user and revoke write to its stores


@pytest.fixture(scope="module", params=SERVERS)
def stack(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("ws")
    (tmp / "rules.yaml").write_text(RULES)
    public_port, admin_port = ports()
    with upstream_server() as upstream:
        config = deep_merge(
            base_config(
                tmp,
                public_port,
                admin_port,
                proxy={"upstream": upstream.url},
                rules=[str(tmp / "rules.yaml")],
                session={"cache_ttl": "2s"},
            ),
            on_server(request.param),
        )
        path = write_config(tmp / "sidecar.yaml", config)
        migrate(path, tmp)
        with running(serve_argv(path), cwd=tmp, public_port=public_port, admin_port=admin_port):
            yield Stack(public_port, load_config([str(path)], environ={}))


def url(stack: Stack, path: str = "/ws") -> str:
    return f"ws://127.0.0.1:{stack.port}{path}"


async def test_signed_in_websocket_is_proxied(stack: Stack) -> None:
    _, _, token = await make_user(stack.config)
    headers = {"Cookie": f"ory_kratos_session={token}"}
    async with websockets.connect(url(stack), additional_headers=headers, subprotocols=["chat"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "chat"
        await ws.send("hello")
        assert await ws.recv() == "echo:hello"


async def test_anonymous_upgrade_is_refused(stack: Stack) -> None:
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(url(stack)):
            pass
    assert info.value.response.status_code == 401
    async with websockets.connect(url(stack, "/open-ws")) as ws:
        await ws.send("x")
        assert await ws.recv() == "echo:x"


async def test_foreign_origin_is_refused(stack: Stack) -> None:
    _, _, token = await make_user(stack.config, email="origin@example.com")
    headers = {"Cookie": f"ory_kratos_session={token}"}
    with pytest.raises(InvalidStatus) as info:
        async with websockets.connect(url(stack), additional_headers=headers, origin="http://evil.example"):  # type: ignore[arg-type]
            pass
    assert info.value.response.status_code == 403
    own = f"http://127.0.0.1:{stack.port}"
    async with websockets.connect(url(stack), additional_headers=headers, origin=own) as ws:  # type: ignore[arg-type]
        await ws.send("ok")
        assert await ws.recv() == "echo:ok"


async def test_socket_is_closed_when_the_session_is_revoked(stack: Stack) -> None:
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

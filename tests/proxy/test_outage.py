"""Redis stopped mid-test: protected routes fail closed (503), public ones keep working, and
service recovers when Redis returns. Uses a private redis-server, never the shared one."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from sidecar.security.tokens import digest
from tests.proxy.harness import binary, get, make_user, redis_server, sidecar_server, spawn, upstream_server

RULES = """
version: 1
rules:
  - {id: public, match: {paths: ["/public/**"]}, require: public}
  - {id: home, match: {paths: [/home]}, require: optional}
  - {id: private, match: {paths: ["/private/**"]}, require: authenticated}
"""


async def test_redis_outage_fails_closed_and_recovers(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(RULES)
    with redis_server(tmp_path) as redis, upstream_server() as upstream:
        redis_cfg = {"url": f"redis://127.0.0.1:{redis.port}/0", "key_prefix": "outage-test:"}
        with sidecar_server(
            tmp_path,
            proxy={"upstream": upstream.url},
            rules=[str(tmp_path / "rules.yaml")],
            redis=redis_cfg,
            session={"cache_ttl": "1s"},
        ) as sidecar:
            port = sidecar.proc.port
            identity, session, token = await make_user(sidecar.config)
            auth = {"X-Session-Token": token}
            assert get(port, "/private/x", auth)[0] == 200

            redis.stop()
            await asyncio.sleep(1.5)  # past the cache TTL: the next check must reach Redis
            status, headers, body = get(port, "/private/x", auth)
            assert status == 503, body
            assert json.loads(body)["error"]["code"] == 503 and headers["x-request-id"]
            assert headers["retry-after"] == "3"  # a transient outage says when to come back
            browser = {**auth, "Accept": "text/html", "Sec-Fetch-Mode": "navigate"}
            assert get(port, "/private/x", browser)[0] == 503  # never a login redirect: no logout
            assert get(port, "/public/x")[0] == 200
            assert get(port, "/home", auth)[0] == 200  # optional: served anonymously
            status, _, _ = get(port, "/private/x")  # no token at all: still a plain 401
            assert status == 401

            # Redis returns (same port). It was started without persistence, so put the session
            # back as a persistent Redis would have kept it.
            args = [binary("redis-server"), "--port", str(redis.port), "--bind", "127.0.0.1", "--save", ""]
            args += ["--appendonly", "no", "--dir", str(tmp_path)]
            again = spawn(args, redis.port)
            try:
                from sidecar.storage.redis.backend import RedisBackend

                backend = RedisBackend(redis_cfg["url"], redis_cfg["key_prefix"])
                await backend.sessions.create(session, digest(token))
                await backend.close()
                for _ in range(50):
                    if get(port, "/private/x", auth)[0] == 200:
                        break
                    await asyncio.sleep(0.1)
                status, _, body = get(port, "/private/x", auth)
                assert status == 200
                assert identity.id.hex in body.decode().replace("-", "")
            finally:
                again.stop()

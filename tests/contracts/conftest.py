"""Backends for the store contract suites: each suite runs unchanged on every backend."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sidecar.config.model import RedisConfig
from sidecar.storage.redis.backend import RedisBackend
from sidecar.storage.sql.database import SqlDatabase


@pytest.fixture(params=["sqlite", "postgres", "redis", "redis-cluster"])
def backend_target(request: pytest.FixtureRequest) -> tuple[str, str]:
    """(kind, address), resolved synchronously because the Postgres fixture runs its own loop."""
    if request.param == "sqlite":
        return "sql", str(request.getfixturevalue("sqlite_dsn"))
    if request.param == "postgres":
        return "sql", str(request.getfixturevalue("postgres_dsn"))
    if request.param == "redis-cluster":
        return "redis-cluster", str(request.getfixturevalue("redis_cluster").url())
    return "redis", str(request.getfixturevalue("redis_url"))


@pytest.fixture
async def backend(
    backend_target: tuple[str, str], unique_prefix: str
) -> AsyncIterator[SqlDatabase | RedisBackend]:
    kind, address = backend_target
    if kind == "sql":
        db = SqlDatabase(address)
        await db.migrate()
        yield db
        await db.close()
        return
    mode = "cluster" if kind == "redis-cluster" else "standalone"
    redis = RedisBackend(RedisConfig(url=address, mode=mode, key_prefix=unique_prefix))
    yield redis
    keys = [key async for key in redis.client.scan_iter(match=f"{unique_prefix}*")]
    if keys:
        await redis.client.delete(*keys)
    await redis.close()


@pytest.fixture
async def down_backend(backend_target: tuple[str, str]) -> AsyncIterator[SqlDatabase | RedisBackend]:
    """The same kind of backend, pointed where nothing answers: every call must fail closed."""
    from tests.conftest import free_port

    kind, address = backend_target
    if kind.startswith("redis"):
        mode = "cluster" if kind == "redis-cluster" else "standalone"
        redis = RedisBackend(
            RedisConfig(url=f"redis://127.0.0.1:{free_port()}/0", mode=mode, key_prefix="down:")
        )
        yield redis
        await redis.close()
        return
    if address.startswith("sqlite"):
        dead = "sqlite:////nonexistent-sidecar-dir/unreachable.db"
    else:
        dead = f"postgresql://postgres@127.0.0.1:{free_port()}/unreachable"
    db = SqlDatabase(dead)
    yield db
    await db.close()

"""Fixtures shared by the storage tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from sidecar.storage.redis.backend import RedisBackend


@pytest.fixture
async def redis_backend(redis_url: str, unique_prefix: str) -> AsyncIterator[RedisBackend]:
    """A Redis backend on the real Redis, its keys under a prefix of the test's own, removed after."""
    backend = RedisBackend(redis_url, prefix=unique_prefix)
    yield backend
    keys = [key async for key in backend.client.scan_iter(match=f"{unique_prefix}*")]
    if keys:
        await backend.client.delete(*keys)
    await backend.close()

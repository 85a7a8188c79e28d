"""``sidecar.security.throttle`` on every kv backend (SQLite, PostgreSQL, Redis)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from sidecar.config.model import RateLimit
from sidecar.security.throttle import Throttle, ip_bucket
from sidecar.storage.redis.backend import RedisBackend
from sidecar.storage.sql.database import SqlDatabase
from tests.contracts.conftest import backend, backend_target  # noqa: F401 - shared fixtures

A, B, C = "198.51.100.1", "198.51.100.2", "198.51.100.3"


@pytest.fixture
def kv(backend: SqlDatabase | RedisBackend) -> Any:  # noqa: F811 - the imported fixture
    return backend.kv


def throttle(kv: Any, **limits: Any) -> Throttle:
    return Throttle(kv, RateLimit.model_validate({"initial_delay": "60s", **limits}))


async def fail(t: Throttle, identifier: str | None, ip: str | None, scope: str = "login") -> bool:
    """One attempt that turns out wrong; True when it was admitted."""
    verdict = await t.admit(scope, identifier=identifier, ip=ip)
    if verdict.allowed:
        await t.failed(scope, identifier=identifier, ip=ip)
    return verdict.allowed


async def test_successes_never_count(kv: Any) -> None:
    t = throttle(kv, free_failures=2, per_identifier=2, per_ip=2)
    for _ in range(50):
        assert (await t.admit("login", identifier="ann@example.test", ip=A)).allowed
        await t.succeeded("login", identifier="ann@example.test", ip=A)


async def test_attempts_a_store_outage_left_unjudged_never_count(kv: Any) -> None:
    """admit() counts the attempt; when the credential check then meets a 503 the count is
    taken back, so an outage never throttles the user who retries through it."""
    t = throttle(kv, free_failures=2, per_identifier=2, per_ip=2)
    for _ in range(10):
        assert (await t.admit("login", identifier="bob@example.test", ip=A)).allowed
        await t.abandoned("login", identifier="bob@example.test", ip=A)
    assert await fail(t, "bob@example.test", A)  # the free failures are all still there
    assert await fail(t, "bob@example.test", A)


async def test_failures_delay_the_guesser_but_not_the_owner_elsewhere(kv: Any) -> None:
    t = throttle(kv, free_failures=3, per_identifier=100, per_ip=100)
    assert [await fail(t, "ann@example.test", A) for _ in range(4)] == [True, True, True, False]
    verdict = await t.admit("login", identifier="ANN@example.test.", ip=A)  # the same identifier
    assert not verdict.allowed and 55 <= verdict.retry_after <= 60
    assert (await t.admit("login", identifier="ann@example.test", ip=B)).allowed
    await t.succeeded("login", identifier="ann@example.test", ip=B)
    # The guesser's own counter is untouched by the owner's success.
    assert not (await t.admit("login", identifier="ann@example.test", ip=A)).allowed
    # Other scopes are other counters.
    assert (await t.admit("registration", identifier="ann@example.test", ip=A)).allowed


async def test_a_success_clears_the_failures(kv: Any) -> None:
    t = throttle(kv, free_failures=3)
    assert await fail(t, "bo@example.test", A) and await fail(t, "bo@example.test", A)
    assert (await t.admit("login", identifier="bo@example.test", ip=A)).allowed
    await t.succeeded("login", identifier="bo@example.test", ip=A)
    assert [await fail(t, "bo@example.test", A) for _ in range(4)] == [True, True, True, False]


async def test_the_delay_doubles_and_is_capped(kv: Any) -> None:
    t = throttle(kv, initial_delay="1s", max_delay="10s")
    assert [t.delay(i).total_seconds() for i in range(6)] == [1, 2, 4, 8, 10, 10]
    assert t.delay(10_000) == timedelta(seconds=10)
    # Gates of seconds, not milliseconds: a loaded machine may take a second between two calls.
    t = throttle(kv, free_failures=1, initial_delay="2s")
    assert await fail(t, "cy@example.test", A)  # sets a 2 s gate (delay 0)
    assert not (await t.admit("login", identifier="cy@example.test", ip=A)).allowed
    await asyncio.sleep(2.2)
    assert await fail(t, "cy@example.test", A)  # sets a 4 s gate (delay 1)
    await asyncio.sleep(2.2)
    assert not (await t.admit("login", identifier="cy@example.test", ip=A)).allowed
    await asyncio.sleep(2.2)
    assert (await t.admit("login", identifier="cy@example.test", ip=A)).allowed


async def test_identifier_cap_across_addresses(kv: Any) -> None:
    t = throttle(kv, free_failures=100, per_identifier=4, per_ip=100)
    ips = [f"203.0.113.{i}" for i in range(1, 10)]
    assert [await fail(t, "di@example.test", ip) for ip in ips[:4]] == [True] * 4
    assert not (await t.admit("login", identifier="di@example.test", ip=ips[4])).allowed
    assert (await t.admit("login", identifier="someone-else@example.test", ip=ips[4])).allowed


async def test_credential_stuffing_from_one_address(kv: Any) -> None:
    t = throttle(kv, free_failures=100, per_identifier=100, per_ip=10)
    admitted = [await fail(t, f"user{i}@example.test", C) for i in range(20)]
    assert admitted == [True] * 10 + [False] * 10
    assert (await t.admit("login", identifier="user0@example.test", ip=B)).allowed
    # A success from the stuffing address does not reset its counter.
    verdict = await t.admit("login", identifier="real@example.test", ip=C)
    assert not verdict.allowed and verdict.retry_after > 0


async def test_parallel_guesses_get_only_the_free_attempts(kv: Any) -> None:
    t = throttle(kv, free_failures=5)
    verdicts = await asyncio.gather(
        *(t.admit("login", identifier="ed@example.test", ip=A) for _ in range(30))
    )
    assert sum(v.allowed for v in verdicts) == 5
    assert all(v.retry_after > 0 for v in verdicts if not v.allowed)


async def test_disabled(kv: Any) -> None:
    t = throttle(kv, enabled=False, free_failures=1, per_identifier=1, per_ip=1)
    assert all([await fail(t, "fa@example.test", A) for _ in range(5)])


@pytest.mark.parametrize(
    ("ip", "bucket"),
    [
        pytest.param("192.0.2.7", "192.0.2.7", id="v4"),
        pytest.param("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64", id="v6-64"),
        pytest.param("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64", id="v6-same-64"),
        pytest.param("::ffff:192.0.2.7", "192.0.2.7", id="v4-mapped"),
        pytest.param("testclient", "testclient", id="not-an-address"),
    ],
)
def test_ip_bucket(ip: str, bucket: str) -> None:
    assert ip_bucket(ip) == bucket

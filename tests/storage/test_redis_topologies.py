"""Redis Cluster and Sentinel: key placement, and a master failover in the middle of traffic.

Each failover test starts its own private servers (tests/redis_topologies.py) and kills a master
with SIGKILL while two "replicas" (two ``Services`` on one database, as two pods) keep resolving
sessions. What must hold: requests that meet the failover get ``ServiceUnavailable`` (a 503 at
the HTTP boundary), never another error; the same clients recover by themselves once a replica is
promoted; every session written before the crash is still there; a logout on one replica still
reaches the other's cache afterwards.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

from sidecar.app import Services, build_services
from sidecar.config.model import RedisConfig
from sidecar.errors import ServiceUnavailable
from sidecar.identity.model import Identity
from sidecar.storage.redis.backend import RedisBackend, session_key_prefix
from tests.conftest import make_config
from tests.redis_topologies import Cluster, cli, redis_cluster, redis_sentinel, replicated

CHANNEL_SUFFIX = "sidecar:session-revocations"
RECOVERY_BOUND = 30.0  # seconds from the kill until every request succeeds again (a busy CI box)


def _slot(cluster: Cluster, key: str) -> int:
    return int(cli(cluster.live_port(), "CLUSTER", "KEYSLOT", key).strip())


async def test_cluster_keys_of_one_script_share_a_slot_and_the_rest_spread(redis_cluster: Cluster) -> None:
    config = RedisConfig(url=redis_cluster.url(), mode="cluster", key_prefix=f"t{uuid.uuid4().hex[:6]}:")
    prefix = session_key_prefix(config)
    session_keys = [f"{prefix}session:{uuid.uuid4()}", f"{prefix}session-token:abc"]
    session_keys += [f"{prefix}identity-sessions:{uuid.uuid4()}", f"{prefix}sessions"]
    assert len({_slot(redis_cluster, k) for k in session_keys}) == 1
    backend = RedisBackend(config)
    try:
        for i in range(30):
            await backend.kv.set(f"flow:{i}", b"x", timedelta(minutes=1))
        masters = {redis_cluster.master_of(f"{config.key_prefix}kv:flow:{i}") for i in range(30)}
        assert len(masters) == 3  # flows and counters use the whole cluster
    finally:
        await backend.close()


async def _services(redis: dict[str, Any], dsn: str) -> Services:
    config = make_config(dsn=dsn, redis=redis, session={"cache_ttl": "1m"})
    services = build_services(config, courier_worker=False)
    await services.database.migrate()
    await services.start()
    await services.invalidation.start()
    await asyncio.wait_for(services.invalidation.subscribed.wait(), 10)  # type: ignore[attr-defined]
    return services


async def _failover_under_traffic(
    a: Services, b: Services, replicated: Any, kill: Any, wait_promoted: Any
) -> tuple[Counter[str], float]:
    """Sessions issued on ``a``, resolved on both while ``kill()`` crashes a master, once
    ``replicated()`` says a replica has every write so far (Redis replicates asynchronously: a
    write the master took and no replica had yet is lost with it, by design; ``WAIT`` before the
    crash makes "every session written before the crash survives" a promise Redis keeps)."""
    identity = uuid.uuid4()
    issued = [await a.sessions.issue(identity, "password") for _ in range(20)]
    outcomes: Counter[str] = Counter()
    stop = asyncio.Event()
    last_failure = [0.0]

    async def traffic(services: Services) -> None:
        i = 0
        while not stop.is_set():
            token = issued[i % len(issued)].token
            i += 1
            try:
                # Past the cache: the store itself has to answer.
                session = await services.sessions.resolve(token)
                await services.kv.incr(f"rate:{i % 50}", timedelta(minutes=1))
                outcomes["ok" if session is not None else "missing"] += 1
            except ServiceUnavailable:
                outcomes["unavailable"] += 1
                last_failure[0] = time.monotonic()
            except Exception as exc:  # anything else would be a 500
                outcomes[f"error {type(exc).__name__}: {exc}"] += 1
            await asyncio.sleep(0.005)

    tasks = [asyncio.create_task(traffic(s)) for s in (a, b)]
    await asyncio.sleep(0.5)
    await asyncio.to_thread(replicated)
    killed_at = time.monotonic()
    kill()
    await wait_promoted()
    # Then traffic must be clean again, by itself, with the same clients.
    deadline = killed_at + RECOVERY_BOUND
    while time.monotonic() < deadline and time.monotonic() - max(last_failure[0], killed_at) < 2.0:
        await asyncio.sleep(0.1)
    stop.set()
    await asyncio.gather(*tasks)
    recovered_after = max(last_failure[0], killed_at) - killed_at
    assert recovered_after < RECOVERY_BOUND, (recovered_after, outcomes)
    for item in issued:
        assert await b.sessions.resolve(item.token) is not None  # every session survived
    return outcomes, recovered_after


async def _identity(services: Services) -> uuid.UUID:
    email = f"{uuid.uuid4().hex[:8]}@example.test"
    identity = Identity(schema_id="default", traits={"email": email})
    return (await services.identity_store.create(identity)).id


async def _revocation_reaches(a: Services, b: Services, within: float = 2.0) -> float:
    issued = await a.sessions.issue(await _identity(a), "password")
    assert await b.resolver.resolve(issued.token) is not None  # cached on b
    started = time.monotonic()
    assert await a.sessions.revoke(issued.session)
    while await b.resolver.resolve(issued.token) is not None:
        assert time.monotonic() - started < within, "the revocation never reached the other replica"
        await asyncio.sleep(0.02)
    return time.monotonic() - started


def _prefix_with_channel_apart(cluster: Cluster) -> str:
    """A key prefix whose revocation channel and session keys live on different masters, so one
    test can fail over each of them."""
    while True:
        prefix = f"fo{uuid.uuid4().hex[:6]}:"
        config = RedisConfig(url=cluster.url(), mode="cluster", key_prefix=prefix)
        sessions = cluster.master_of(f"{session_key_prefix(config)}x")
        if cluster.master_of(prefix + CHANNEL_SUFFIX) != sessions:
            return prefix


async def test_cluster_master_failover_mid_traffic(tmp_path: Path, sqlite_dsn: str) -> None:
    with redis_cluster(tmp_path) as cluster:
        prefix = _prefix_with_channel_apart(cluster)
        redis = {"url": cluster.url(), "mode": "cluster", "nodes": [f"127.0.0.1:{p}" for p in cluster.ports]}
        redis["key_prefix"] = prefix
        a, b = await _services(redis, sqlite_dsn), await _services(redis, sqlite_dsn)
        try:
            assert await _revocation_reaches(a, b) < 1.0
            config = RedisConfig(url=cluster.url(), mode="cluster", key_prefix=prefix)
            sessions_master = cluster.master_of(f"{session_key_prefix(config)}x")
            fence = f"{session_key_prefix(config)}fence"  # the sessions' hash tag: their master

            outcomes, recovered = await _failover_under_traffic(
                a,
                b,
                lambda: replicated(sessions_master, fence),
                lambda: cluster.kill(sessions_master),
                lambda: asyncio.to_thread(cluster.wait_failover, sessions_master),
            )
            assert not [k for k in outcomes if k.startswith("error")], outcomes
            assert outcomes["missing"] == 0 and outcomes["ok"] > 50, outcomes
            assert recovered < RECOVERY_BOUND, outcomes
            assert outcomes["unavailable"] > 0  # the crash was really met by traffic

            # Now the master that carries the revocation channel: b's subscription must follow it.
            channel_master = cluster.master_of(prefix + CHANNEL_SUFFIX)
            assert channel_master != sessions_master
            cluster.kill(channel_master)
            await asyncio.to_thread(cluster.wait_failover, channel_master)
            deadline = time.monotonic() + RECOVERY_BOUND
            while True:
                try:
                    assert await _revocation_reaches(a, b) < 2.0
                    break
                except (ServiceUnavailable, AssertionError):
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
        finally:
            await a.stop()
            await b.stop()


async def test_sentinel_master_failover_mid_traffic(tmp_path: Path, sqlite_dsn: str) -> None:
    with redis_sentinel(tmp_path) as group:
        redis = {"mode": "sentinel", "sentinels": group.sentinel_addresses, "key_prefix": "sentinel-test:"}
        a, b = await _services(redis, sqlite_dsn), await _services(redis, sqlite_dsn)
        try:
            assert await _revocation_reaches(a, b) < 1.0

            def kill() -> None:
                group.master.popen.kill()
                group.master.popen.wait(5)

            outcomes, recovered = await _failover_under_traffic(
                a,
                b,
                lambda: replicated(group.master.port, "sentinel-test:fence"),
                kill,
                lambda: asyncio.to_thread(group.wait_master, group.replica.port),
            )
            assert not [k for k in outcomes if k.startswith("error")], outcomes
            assert outcomes["missing"] == 0 and outcomes["ok"] > 50, outcomes
            assert recovered < RECOVERY_BOUND, outcomes
            assert outcomes["unavailable"] > 0  # the crash was really met by traffic
            deadline = time.monotonic() + RECOVERY_BOUND
            while True:
                try:
                    assert await _revocation_reaches(a, b) < 2.0
                    break
                except (ServiceUnavailable, AssertionError):
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
        finally:
            await a.stop()
            await b.stop()

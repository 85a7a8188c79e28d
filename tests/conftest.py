"""Shared fixtures: real services (Redis, PostgreSQL) and small factories.

A missing service fails the run loudly; nothing here ever skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from sidecar.config.loader import deep_merge, load_config
from sidecar.config.model import Config

# The suite starts hundreds of Python processes from this checkout (`sidecar serve` and its
# workers, hashing and sandbox processes, CLI runs). With PYTHONDONTWRITEBYTECODE set in the
# caller's environment each compiled every sidecar module from source again (~0.2 s of CPU a start,
# the installed packages have their bytecode already): let them cache it (__pycache__ is ignored).
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

REDIS_URL = os.environ.get("SIDECAR_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_ADMIN_DSN = os.environ.get("SIDECAR_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
FAST_ARGON2 = {"memory": "8MB", "iterations": 1, "parallelism": 1}


def _share_the_default_tls_context() -> None:
    """httpx builds an SSL context for every client it creates, parsing a CA bundle again (16 ms of
    CPU here, ~40 ms on the slow CI machine), also for plain-http clients and for each
    ``httpx.get`` of a readiness poll. The tests create thousands of clients (each harness, each
    in-process server's own client, every poll), so clients asking for the default verification
    share one context per CA source (``SSL_CERT_FILE``/``SSL_CERT_DIR`` or certifi's bundle), built
    once per process: the same certificates. Any other ``verify`` or ``cert`` gets its own."""
    import ssl

    from httpx._transports import default

    create = default.create_ssl_context  # type: ignore[attr-defined]
    shared: dict[tuple[bool, str | None, str | None], ssl.SSLContext] = {}

    def create_ssl_context(verify: Any = True, cert: Any = None, trust_env: bool = True) -> ssl.SSLContext:
        if verify is not True or cert is not None:
            return create(verify=verify, cert=cert, trust_env=trust_env)
        key = (trust_env, os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
        if key not in shared:
            shared[key] = create(verify=verify, cert=cert, trust_env=trust_env)
        return shared[key]

    default.create_ssl_context = create_ssl_context  # type: ignore[attr-defined]


_share_the_default_tls_context()


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


# Ports for the servers the tests start come from below the kernel's ephemeral range
# (ip_local_port_range, 32768-60999 by default), one slice per xdist worker, handed out in turn.
# A port from bind(0) is an ephemeral one: once released, the kernel may give it to any outgoing
# connection (the suite opens thousands, to Redis, PostgreSQL, nginx, the servers themselves) or to
# another worker's bind(0) before the test's server binds it. Seen in CI: a sidecar started on such
# a port refused to start, "Address already in use" (tests/ops/test_kratos_flow_styles.py).
_PORTS_LOW, _PORTS_HIGH = 20000, 32000


def _port_slice() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    index = int(worker) if worker.isdigit() else 0
    width = (_PORTS_HIGH - _PORTS_LOW) // max(count, 1)
    start = _PORTS_LOW + index * width
    return range(start, start + width)


_PORTS = _port_slice()
# A random starting point: two suites running side by side (two worktrees) rarely walk in step.
_next_port: Iterator[int] = iter([*_PORTS[(k := random.randrange(len(_PORTS))) :], *_PORTS[:k]] * 4)


def free_port() -> int:
    """A port on 127.0.0.1 nobody listens on now, and that no outgoing connection or other worker
    of this run will be given before a server binds it (not reused until this worker's slice of
    about 6,000 ports has gone round)."""
    for port in _next_port:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue  # something outside the suite listens there (or a lingering socket)
            return port
    raise RuntimeError(f"no free port left in {_PORTS}")


@pytest.fixture(scope="session")
def redis_url() -> str:
    if not _port_open("127.0.0.1", 6379):
        pytest.fail("Redis is not reachable on 127.0.0.1:6379 (start it: see .ci/run)", pytrace=False)
    return REDIS_URL


@pytest.fixture(scope="session")
def postgres_server() -> str:
    if not _port_open("127.0.0.1", 5432):
        pytest.fail("PostgreSQL is not reachable on 127.0.0.1:5432 (start it: see .ci/run)", pytrace=False)
    return PG_ADMIN_DSN


async def _pg_exec(dsn: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture
def postgres_dsn(postgres_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test; dropped afterwards."""
    with _new_postgres_database(postgres_server) as dsn:
        yield dsn


@contextlib.contextmanager
def _new_postgres_database(server_dsn: str) -> Iterator[str]:
    name = f"sidecar_test_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_exec(server_dsn, f'CREATE DATABASE "{name}"'))
    try:
        yield server_dsn.rsplit("/", 1)[0] + "/" + name
    finally:
        asyncio.run(_pg_exec(server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def module_dsn(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``dsn`` for a whole module: one database per backend, for tests that only read or that each
    compare with what they found (a server per test costs a start and a migration each)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('module-db')}/sidecar.db"
        return
    with _new_postgres_database(request.getfixturevalue("postgres_server")) as dsn:
        yield dsn


@pytest.fixture
def sqlite_dsn(tmp_path: Any) -> str:
    return f"sqlite:///{tmp_path}/sidecar.db"


@pytest.fixture(params=["sqlite", "postgres"])
def dsn(request: pytest.FixtureRequest) -> str:
    """Every SQL test runs on both backends."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_dsn"))
    return str(request.getfixturevalue("postgres_dsn"))


@pytest.fixture
async def database(dsn: str) -> AsyncIterator[Any]:
    """A migrated SQL database on the test's backend (``dsn``), closed after the test."""
    from sidecar.storage.sql.database import SqlDatabase

    db = SqlDatabase(dsn)
    await db.migrate()
    yield db
    await db.close()


def make_config(**overrides: Any) -> Config:
    """A production-shaped config (secrets set, fast hashing) with nested overrides.

    ``make_config(dsn=..., selfservice={"methods": {...}})`` deep-merges into the defaults.
    Hashes run in threads (``hashers.pool: thread``): services built in the test process would
    otherwise start a Python hashing process each (~70 ms of CPU, about a thousand a suite). The
    process pool is tested on its own (tests/hashing/test_hasher.py, both pools) and under every
    ``sidecar serve`` the tests start (tests/ops/serve.py keeps the default).
    """
    base: dict[str, Any] = {
        "dsn": "sqlite:///:memory:",
        "secrets": {"cookie": ["test-cookie-secret-0123456789abcdef"]},
        "hashers": {"argon2": FAST_ARGON2, "pool": "thread"},
        "serve": {"public": {"base_url": "http://127.0.0.1:4433/.auth"}},
        "selfservice": {"default_browser_return_url": "http://127.0.0.1:4433/"},
    }
    return load_config(overrides=deep_merge(base, overrides))


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A private 6-node Redis Cluster (3 masters, 3 replicas) shared by the tests that only use it;
    tests that kill nodes start their own (tests/redis_topologies.py)."""
    from tests.redis_topologies import redis_cluster as start

    with start(tmp_path_factory.mktemp("redis-cluster")) as cluster:
        yield cluster


@pytest.fixture
def unique_prefix() -> str:
    """A Redis key prefix no other test (or concurrent test run) uses."""
    return f"sidecar-test:{uuid.uuid4().hex[:10]}:"


_MIGRATED_SQLITE: list[str] = []


async def _start_from_migrated_sqlite(dsn: str) -> None:
    """A new SQLite file for services starts as a copy of one this process migrated once (the
    services still run ``migrate()``, a check at the newest revision): the migrations from an
    empty file cost ~40 ms of CPU for each of the suite's ~1,500 SQLite services, while what they
    build is the same every time. Migrating an empty database is tested where it is the subject
    (tests/storage, tests/test_preflight.py, every ``sidecar serve`` start) and on PostgreSQL."""
    import shutil
    import tempfile

    from sidecar.storage.sql.database import SqlDatabase

    path = dsn.removeprefix("sqlite:///")
    if not dsn.startswith("sqlite:////") or "?" in dsn or os.path.exists(path):
        return
    if not _MIGRATED_SQLITE:
        template = os.path.join(tempfile.mkdtemp(prefix="sidecar-test-migrated-"), "sidecar.db")
        db = SqlDatabase(f"sqlite:///{template}")
        try:
            await db.migrate()
        finally:
            await db.close()
        if any(os.path.exists(template + suffix) for suffix in ("-wal", "-journal")):
            return  # not one self-contained file: migrate each database as before
        _MIGRATED_SQLITE.append(template)
    shutil.copyfile(_MIGRATED_SQLITE[0], path)


@contextlib.asynccontextmanager
async def _services_factory() -> AsyncIterator[Any]:
    from sidecar.app import build_services

    started: list[Any] = []

    async def factory(config: Config) -> Any:
        await _start_from_migrated_sqlite(config.dsn)
        services = build_services(config)
        await services.database.migrate()
        await services.start()
        started.append(services)
        return services

    try:
        yield factory
    finally:
        for s in started:
            await s.stop()


@pytest.fixture
async def services_factory() -> AsyncIterator[Any]:
    """Build and start ``Services`` for a config; stopped after the test."""
    async with _services_factory() as factory:
        yield factory


@pytest.fixture(scope="module")
async def module_services_factory() -> AsyncIterator[Any]:
    """``services_factory`` for module-scoped fixtures: stopped after the module's last test."""
    async with _services_factory() as factory:
        yield factory


def wait_until_ready(url: str, proc: Any, timeout: float = 90) -> None:
    """Poll ``url`` until it answers 200; fail with the process output if it exits first.

    The bound is generous: a loaded CI machine can take tens of seconds to start a Python server."""
    import time

    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            output = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"the process exited with {proc.returncode} before {url} was ready:\n{output}")
        if time.monotonic() > deadline:
            pytest.fail(f"{url} was not ready within {timeout} s")
        time.sleep(0.2)

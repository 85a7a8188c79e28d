"""whoami from the session cache never outlives a change made on another worker (issue 21).

Two workers (two ``Services`` and apps on one database, as two processes or replicas would be)
with ``session.cache_ttl: 1h``: only the revocation channel can drop a cached whoami, so a
change made through worker A that never shows on worker B fails the test instead of passing
after a TTL. B's cache is warm before every change. Both channels: SQLite with polling
(``PollingInvalidation``, 1 s) and PostgreSQL + Redis pub/sub.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from sidecar.identity.addresses import ObservedAddresses
from sidecar.identity.model import Credential
from tests.api.public.conftest import Harness, harnesses
from tests.api.public.helpers import register_api

BOUND = 10.0
"""Seconds B gets to show a change: ten polling intervals, and far below the 1 h cache TTL."""
WHOAMI = "/.auth/sessions/whoami"


async def _totp(a: Harness, identity_id: uuid.UUID, session_id: uuid.UUID) -> None:
    # What the settings flow stores on enrolment: B must now demand aal2 (highest_available).
    credential = Credential(type="totp", config={"totp_url": "otpauth://totp/x?secret=JBSWY3DPEHPK3PXP"})
    await a.services.identities.save_credential(identity_id, credential)


async def _step_up(a: Harness, identity_id: uuid.UUID, session_id: uuid.UUID) -> None:
    session = await a.services.sessions.get(session_id)
    assert session is not None
    await a.services.sessions.add_authentication_method(session, "totp", "aal2")


async def _verify(a: Harness, identity_id: uuid.UUID, session_id: uuid.UUID) -> None:
    identity = await a.services.identities.get(identity_id)
    addresses = ObservedAddresses(a.services.identity_store, a.services.sessions)
    await addresses.mark_address_verified(identity.verifiable_addresses[0].id)


async def _admin(a: Harness, method: str, path: str, body: Any = None) -> None:
    r = await a.admin.request(method, path, json=body)
    assert r.status_code < 300, r.text


Change = Callable[[Harness, uuid.UUID, uuid.UUID, str], Awaitable[None]]
Seen = Callable[[httpx.Response], bool]


def _inactive(r: httpx.Response) -> bool:
    return r.status_code == 401 and r.json()["error"]["id"] == "session_inactive"


CHANGES: dict[str, tuple[Change, Seen]] = {
    "api logout": (
        lambda a, i, s, token: _admin_public(
            a, "DELETE", "/.auth/self-service/logout/api", {"session_token": token}
        ),
        _inactive,
    ),
    "admin revokes the session": (
        lambda a, i, s, token: _admin(a, "DELETE", f"/admin/sessions/{s}"),
        _inactive,
    ),
    "admin deletes the identity's sessions": (
        lambda a, i, s, token: _admin(a, "DELETE", f"/admin/identities/{i}/sessions"),
        _inactive,
    ),
    "identity disabled": (
        lambda a, i, s, token: _admin(
            a, "PATCH", f"/admin/identities/{i}", [{"op": "replace", "path": "/state", "value": "inactive"}]
        ),
        _inactive,
    ),
    "identity deleted": (lambda a, i, s, token: _admin(a, "DELETE", f"/admin/identities/{i}"), _inactive),
    "traits changed": (
        lambda a, i, s, token: _admin(
            a,
            "PATCH",
            f"/admin/identities/{i}",
            [{"op": "add", "path": "/metadata_public", "value": {"v": 2}}],
        ),
        lambda r: r.status_code == 200 and r.json()["identity"]["metadata_public"] == {"v": 2},
    ),
    "second factor set up": (
        lambda a, i, s, token: _totp(a, i, s),
        lambda r: r.status_code == 403 and r.json()["error"]["id"] == "session_aal2_required",
    ),
    "session stepped up": (
        lambda a, i, s, token: _step_up(a, i, s),
        lambda r: r.status_code == 200 and r.json()["authenticator_assurance_level"] == "aal2",
    ),
    "address verified": (
        lambda a, i, s, token: _verify(a, i, s),
        lambda r: (
            r.status_code == 200 and r.json()["identity"]["verifiable_addresses"][0]["verified"] is True
        ),
    ),
}


async def _admin_public(a: Harness, method: str, path: str, body: Any) -> None:
    r = await a.client.request(method, path, json=body)
    assert r.status_code < 300, r.text


@pytest.fixture(scope="module")
def stores(module_dsn: str) -> dict[str, Any]:
    """Config for the stores (SQLite: polling; PostgreSQL: with Redis); synchronous, because the
    PostgreSQL fixture runs its own loop."""
    overrides: dict[str, Any] = {"session": {"cache_ttl": "1h"}, "dsn": module_dsn}
    if module_dsn.startswith("postgres"):
        overrides["redis_prefix"] = f"sidecar-test:{uuid.uuid4().hex[:10]}:"
    return overrides


@pytest.fixture(scope="module")
async def workers(
    stores: dict[str, Any], module_services_factory: Any
) -> AsyncIterator[tuple[Harness, Harness]]:
    """One pair per store for the module: each test signs up an identity of its own and changes
    only that one, and the channel must carry every test's change, not only a fresh pair's first."""
    async with harnesses(module_services_factory, stores["dsn"]) as factory:
        yield await factory(**stores), await factory(**stores)


@pytest.mark.parametrize("change", list(CHANGES))
async def test_a_change_on_one_worker_reaches_whoami_on_the_other(
    workers: tuple[Harness, Harness], change: str
) -> None:
    a, b = workers
    registered = await register_api(a.client, f"fresh-{uuid.uuid4().hex[:8]}@example.test")
    assert registered.status_code == 200, registered.text
    token = registered.json()["session_token"]
    identity_id = uuid.UUID(registered.json()["identity"]["id"])
    session_id = uuid.UUID(registered.json()["session"]["id"])
    headers = {"X-Session-Token": token}
    act, seen = CHANGES[change]

    before = await b.client.get(WHOAMI, headers=headers)  # B's cache holds the session now
    assert before.status_code == 200 and not seen(before)
    assert (await b.client.get("/.auth/sessions", headers=headers)).status_code == 200
    assert (await b.client.get(WHOAMI, headers=headers)).json() == before.json()  # served again, cached

    await act(a, identity_id, session_id, token)
    assert seen(await a.client.get(WHOAMI, headers=headers)), "the acting worker applies it at once"
    deadline = time.monotonic() + BOUND
    while not seen(await b.client.get(WHOAMI, headers=headers)):
        assert time.monotonic() < deadline, f"worker B still serves the old whoami after {BOUND}s"
        await asyncio.sleep(0.05)
    for _ in range(3):  # and never the old answer again
        assert seen(await b.client.get(WHOAMI, headers=headers))
    if seen is _inactive:  # the caller's session list resolves the caller the same way
        assert _inactive(await b.client.get("/.auth/sessions", headers=headers))

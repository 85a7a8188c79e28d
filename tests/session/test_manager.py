"""SessionManager on every session store: Redis, SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from sidecar.config.model import SessionConfig
from sidecar.identity.model import utcnow
from sidecar.security import tokens
from sidecar.session.manager import SessionManager
from sidecar.session.model import Device, ProviderSignIn
from sidecar.session.store import SessionStore


@pytest.fixture(params=["redis", "sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> tuple[str, str, str]:
    """(kind, url or dsn, key prefix); resolved outside the event loop (the PG fixture is sync)."""
    if request.param == "redis":
        return "redis", request.getfixturevalue("redis_url"), request.getfixturevalue("unique_prefix")
    fixture = "sqlite_dsn" if request.param == "sqlite" else "postgres_dsn"
    return "sql", request.getfixturevalue(fixture), ""


@pytest.fixture
async def store(backend: tuple[str, str, str]) -> AsyncIterator[SessionStore]:
    kind, url, prefix = backend
    if kind == "redis":
        from sidecar.storage.redis.backend import RedisBackend

        redis = RedisBackend(url, prefix)
        yield redis.sessions
        await redis.close()
        return
    from sidecar.storage.sql.database import SqlDatabase

    database = SqlDatabase(url)
    await database.migrate()
    yield database.sessions
    await database.close()


class Recorder:
    """A revocation channel that records what was published."""

    def __init__(self) -> None:
        self.seen: list[uuid.UUID] = []
        self.identities: list[uuid.UUID] = []

    async def publish(
        self, session_id: uuid.UUID | None = None, identity_id: uuid.UUID | None = None
    ) -> None:
        if session_id is not None:
            self.seen.append(session_id)
        if identity_id is not None:
            self.identities.append(identity_id)


def _manager(store: SessionStore, recorder: Recorder | None = None, **config: Any) -> SessionManager:
    return SessionManager(store, SessionConfig(**config), recorder)


async def test_issue_and_resolve(store: SessionStore) -> None:
    manager = _manager(store)
    identity = uuid.uuid4()
    issued = await manager.issue(identity, "password", device=Device(ip_address="10.0.0.1", user_agent="ua"))
    assert issued.token.startswith("ory_st_") and len(issued.token) == 39
    resolved = await manager.resolve(issued.token)
    assert resolved is not None and resolved.id == issued.session.id and resolved.identity_id == identity
    assert resolved.authentication_methods[0].method == "password"
    assert resolved.devices[0].ip_address == "10.0.0.1"
    assert (await store.get_by_token(tokens.digest(issued.token))) is not None
    assert (await store.get_by_token(issued.token)) is None  # only the digest is a key
    assert timedelta(hours=23) < resolved.expires_at - utcnow() <= timedelta(hours=24)


async def test_tokens_are_unique(store: SessionStore) -> None:
    manager = _manager(store)
    seen = {(await manager.issue(uuid.uuid4(), "password")).token for _ in range(20)}
    assert len(seen) == 20


@pytest.mark.parametrize("token", [None, "", "ory_st_nope", "x" * 300])
async def test_unknown_tokens(store: SessionStore, token: str | None) -> None:
    assert await _manager(store).resolve(token) is None


async def test_revoke_calls_back(store: SessionStore) -> None:
    recorder = Recorder()
    manager = _manager(store, recorder)
    identity = uuid.uuid4()
    keep = await manager.issue(identity, "password")
    drop = [await manager.issue(identity, "password") for _ in range(2)]
    assert await manager.revoke(drop[0].session)
    assert await manager.resolve(drop[0].token) is None
    assert await manager.revoke_others(identity, except_id=keep.session.id) == 1
    assert await manager.resolve(drop[1].token) is None
    assert await manager.resolve(keep.token) is not None
    assert recorder.seen == [drop[0].session.id, drop[1].session.id]
    assert await manager.delete_for_identity(identity) >= 1
    assert await manager.resolve(keep.token) is None
    assert keep.session.id in recorder.seen


async def test_a_provider_logout_revokes_only_the_sessions_it_names(store: SessionStore) -> None:
    """SAML core §3.7.3.2: the sessions of the NameID with one of the SessionIndex values (through
    the connection that made them), every session of the identity when none is given."""
    recorder = Recorder()
    manager = _manager(store, recorder)
    identity = uuid.uuid4()

    def via(provider: str, index: str, subject: str = "ann@acme.example") -> ProviderSignIn:
        return ProviderSignIn(provider, subject, None, index)

    first = await manager.issue(identity, "saml", via=via("acme", "s1"))
    second = await manager.issue(identity, "saml", via=via("acme", "s2"))
    elsewhere = await manager.issue(
        identity, "saml", via=via("partner", "s1")
    )  # same index, other connection
    other_subject = await manager.issue(identity, "saml", via=via("acme", "s1", "bob@acme.example"))
    password = await manager.issue(identity, "password")
    stranger = await manager.issue(uuid.uuid4(), "saml", via=via("acme", "s1"))
    assert first.session.authentication_methods[0].session_index == "s1"

    assert await manager.revoke_provider_sessions(identity, "saml", "acme", "ann@acme.example", ("s1",)) == 1
    assert await manager.resolve(first.token) is None
    assert recorder.seen == [first.session.id]
    for kept in (second, elsewhere, other_subject, password, stranger):
        assert await manager.resolve(kept.token) is not None
    # A refresh through the same connection adds its sign-in: either index now names the session.
    await manager.reauthenticate(second.session, "saml", via=via("acme", "s3"))
    assert await manager.revoke_provider_sessions(identity, "saml", "acme", "ann@acme.example", ("s3",)) == 1
    assert await manager.resolve(second.token) is None
    assert (
        await manager.revoke_provider_sessions(identity, "saml", "acme", "ann@acme.example", ("nope",)) == 0
    )
    # No SessionIndex: every session of the identity, whatever signed it in; nobody else's.
    assert await manager.revoke_provider_sessions(identity, "saml", "acme", "ann@acme.example", ()) == 3
    for gone in (elsewhere, other_subject, password):
        assert await manager.resolve(gone.token) is None
    assert await manager.resolve(stranger.token) is not None


async def test_expired_sessions_do_not_resolve(store: SessionStore) -> None:
    manager = _manager(store)
    issued = await manager.issue(uuid.uuid4(), "password")
    past = replace(issued.session, expires_at=utcnow() - timedelta(seconds=1))
    await store.update(past)
    assert await manager.resolve(issued.token) is None


async def test_reauthenticate_keeps_the_session(store: SessionStore) -> None:
    manager = _manager(store)
    issued = await manager.issue(uuid.uuid4(), "password")
    updated = await manager.reauthenticate(issued.session, "password")
    assert updated.id == issued.session.id and updated.authenticated_at >= issued.session.authenticated_at
    assert len(updated.authentication_methods) == 2
    resolved = await manager.resolve(issued.token)
    assert resolved is not None and len(resolved.authentication_methods) == 2


async def test_extend_honours_earliest_possible_extend(store: SessionStore) -> None:
    eager = _manager(store, lifespan="1h")
    issued = await eager.issue(uuid.uuid4(), "password")
    await store.update(replace(issued.session, expires_at=utcnow() + timedelta(minutes=10)))
    extended = await eager.extend(issued.session.id)
    assert extended is not None and extended.expires_at - utcnow() > timedelta(minutes=55)

    late = _manager(store, lifespan="1h", earliest_possible_extend="15m")
    other = await late.issue(uuid.uuid4(), "password")
    unchanged = await late.extend(other.session.id)
    assert unchanged is not None and unchanged.expires_at == other.session.expires_at
    assert await late.extend(uuid.uuid4()) is None


async def test_logout_token_is_bound_to_its_session(store: SessionStore) -> None:
    manager = _manager(store)
    issued = await manager.issue(uuid.uuid4(), "password")
    other = await manager.issue(uuid.uuid4(), "password")
    token = await manager.bind_logout_token(issued.session)
    assert token.startswith("ory_lo_")
    reloaded = await manager.resolve(issued.token)
    assert reloaded is not None and manager.logout_token_matches(reloaded, token)
    assert reloaded.logout_token_digest != token
    assert not manager.logout_token_matches(other.session, token)
    assert not manager.logout_token_matches(reloaded, "ory_lo_" + "x" * 32)


async def test_sessions_follow_their_identity(store: SessionStore) -> None:
    """``IdentityObserver``: a changed identity is published; a deleted one takes its sessions."""
    recorder = Recorder()
    manager = _manager(store, recorder)
    owner, bystander = uuid.uuid4(), uuid.uuid4()
    mine = [await manager.issue(owner, "password") for _ in range(2)]
    theirs = await manager.issue(bystander, "password")
    await manager.identity_changed(owner)
    assert recorder.identities == [owner]
    assert all([await manager.resolve(m.token) for m in mine])
    await manager.identity_deleted(owner)
    assert recorder.identities == [owner, owner]
    assert [await manager.resolve(m.token) for m in mine] == [None, None]
    assert await store.list_by_identity(owner) == []
    assert await manager.resolve(theirs.token) is not None

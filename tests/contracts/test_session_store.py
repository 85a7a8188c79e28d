"""SessionStore contract, run on SQLite, PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from sidecar import errors
from sidecar.errors import Conflict
from sidecar.session.model import AuthenticationMethod, Device, Session
from sidecar.session.store import SessionStore
from sidecar.storage.redis.backend import RedisBackend
from sidecar.storage.sql.database import SqlDatabase


@pytest.fixture
def store(backend: SqlDatabase | RedisBackend) -> SessionStore:
    return backend.sessions


def make_session(identity_id: uuid.UUID | None = None, *, ttl: float = 3600, **overrides: object) -> Session:
    session = Session(
        identity_id=identity_id or uuid.uuid4(),
        expires_at=datetime.now(UTC) + timedelta(seconds=ttl),
        authentication_methods=(AuthenticationMethod(method="password"),),
        devices=(Device(ip_address="192.0.2.1", user_agent="test"),),
        extra={"k": [1, 2]},
    )
    return replace(session, **overrides)  # type: ignore[arg-type]


def digest() -> str:
    return uuid.uuid4().hex * 2


async def test_create_get_and_get_by_token(store: SessionStore) -> None:
    session, token = make_session(), digest()
    await store.create(session, token)
    assert await store.get(session.id) == session
    assert await store.get_by_token(token) == session
    assert await store.get_by_token(digest()) is None
    assert await store.get(uuid.uuid4()) is None


async def test_duplicate_token_conflicts(store: SessionStore) -> None:
    token = digest()
    await store.create(make_session(), token)
    with pytest.raises(Conflict):
        await store.create(make_session(), token)


async def test_list_by_identity(store: SessionStore) -> None:
    identity = uuid.uuid4()
    mine = [make_session(identity) for _ in range(3)]
    for s in [*mine, make_session()]:
        await store.create(s, digest())
    await store.revoke(mine[0].id)
    listed = await store.list_by_identity(identity)
    assert [s.id for s in listed] == sorted(s.id for s in mine)
    active = await store.list_by_identity(identity, active_only=True)
    assert {s.id for s in active} == {mine[1].id, mine[2].id}


async def test_revoke_keeps_the_session_findable_but_inactive(store: SessionStore) -> None:
    session, token = make_session(), digest()
    await store.create(session, token)
    assert await store.revoke(session.id) is True
    assert await store.revoke(session.id) is False
    assert await store.revoke(uuid.uuid4()) is False
    found = await store.get_by_token(token)
    assert found is not None and found.active is False and found.expires_at == session.expires_at


async def test_revoke_all_except_one(store: SessionStore) -> None:
    identity = uuid.uuid4()
    sessions = [make_session(identity) for _ in range(4)]
    bystander = make_session()
    for s in [*sessions, bystander]:
        await store.create(s, digest())
    assert await store.revoke_all(identity, except_id=sessions[0].id) == 3
    assert [s.id for s in await store.list_by_identity(identity, active_only=True)] == [sessions[0].id]
    assert await store.revoke_all(identity) == 1
    still = await store.get(bystander.id)
    assert still is not None and still.active


async def test_expired_sessions_are_invisible(store: SessionStore) -> None:
    session, token = make_session(ttl=1), digest()
    await store.create(session, token)
    assert await store.get_by_token(token) == session
    await asyncio.sleep(1.2)
    assert await store.get(session.id) is None
    assert await store.get_by_token(token) is None
    assert await store.list_by_identity(session.identity_id) == []
    assert await store.list_all(page_size=10) == []
    assert await store.revoke(session.id) is False


async def test_update_replaces_and_extends(store: SessionStore) -> None:
    session, token = make_session(ttl=1), digest()
    await store.create(session, token)
    upgraded = replace(
        session,
        aal="aal2",
        expires_at=datetime.now(UTC) + timedelta(hours=1),
        authentication_methods=(*session.authentication_methods, AuthenticationMethod("totp", aal="aal2")),
    )
    await store.update(upgraded)
    await asyncio.sleep(1.2)
    assert await store.get_by_token(token) == upgraded
    assert [s.id for s in await store.list_by_identity(session.identity_id)] == [session.id]


async def test_a_provider_sign_in_is_kept_with_the_session(store: SessionStore) -> None:
    """What a SAML sign-in records for its single logout (connection, NameID, its format and the
    SessionIndex) reads back by id, by token and in the identity's list, and after an update."""
    saml = AuthenticationMethod(
        "saml",
        provider="partner",
        subject="pat@partner.test",
        subject_format="urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress",
        session_index="id-idp-session-7",
    )
    session, token = make_session(authentication_methods=(saml,)), digest()
    await store.create(session, token)
    assert await store.get(session.id) == session
    assert await store.get_by_token(token) == session
    listed = await store.list_by_identity(session.identity_id, active_only=True)
    assert [s.authentication_methods for s in listed] == [(saml,)]
    again = replace(saml, session_index="id-idp-session-8")
    refreshed = replace(session, authentication_methods=(saml, again))
    await store.update(refreshed)
    found = await store.get_by_token(token)
    assert found is not None and [m.session_index for m in found.authentication_methods] == [
        "id-idp-session-7",
        "id-idp-session-8",
    ]


async def test_update_of_missing_session_stores_nothing(store: SessionStore) -> None:
    ghost = make_session()
    await store.update(ghost)
    assert await store.get(ghost.id) is None


async def test_delete_by_identity(store: SessionStore) -> None:
    identity = uuid.uuid4()
    tokens = [digest() for _ in range(3)]
    for token in tokens:
        await store.create(make_session(identity), token)
    other = make_session()
    await store.create(other, digest())
    assert await store.delete_by_identity(identity) == 3
    assert await store.delete_by_identity(identity) == 0
    assert all([await store.get_by_token(t) is None for t in tokens])
    assert await store.list_by_identity(identity) == []
    assert await store.get(other.id) == other


async def test_list_all_pages_by_id_and_filters_active(store: SessionStore) -> None:
    sessions = [make_session() for _ in range(5)]
    for s in sessions:
        await store.create(s, digest())
    await store.revoke(sessions[1].id)
    seen: list[uuid.UUID] = []
    after: uuid.UUID | None = None
    while page := await store.list_all(page_size=2, after=after):
        assert len(page) <= 2
        seen += [s.id for s in page]
        after = page[-1].id
    assert seen == sorted(s.id for s in sessions)
    inactive = await store.list_all(page_size=10, active=False)
    assert [s.id for s in inactive] == [sessions[1].id]
    assert len(await store.list_all(page_size=10, active=True)) == 4


async def test_ping_answers_only_when_the_store_does(
    store: SessionStore, down_backend: SqlDatabase | RedisBackend
) -> None:
    await store.ping()  # raises when it cannot answer
    with pytest.raises(errors.ServiceUnavailable):
        await down_backend.sessions.ping()
    with pytest.raises(errors.ServiceUnavailable):  # an outage is never "no session"
        await down_backend.sessions.get_by_token("digest")

"""What a cached session holds: no secret of its user, and enough for whoami's exact answer.

A user with every kind of credential (password hash, TOTP secret, recovery codes, a security key,
OIDC tokens) signs in; the resolver caches the session (real SQLite stores). Walking everything
reachable from the cache (``gc.get_referents``) finds none of the secrets, and whoami's body
from the cache is byte for byte the one rendered from the identity as the store loads it.
"""

from __future__ import annotations

import gc
import json
import sys
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from sidecar.identity.identity_json import identity_to_json
from sidecar.identity.model import Credential, Identity, RecoveryAddress, VerifiableAddress, utcnow
from sidecar.organization.model import Organization
from sidecar.security.tokens import digest, new_session_token
from sidecar.session.model import AuthenticationMethod, Device, Session
from sidecar.session.resolver import SessionResolver
from sidecar.session.session_json import session_to_json
from sidecar.session.whoami import Whoami
from sidecar.strategies.registry import assurance

HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2VjcmV0c2FsdA$c2VjcmV0aGFzaHNlY3JldGhhc2g"
TOTP = "otpauth://totp/sidecar:a@example.com?secret=JBSWY3DPEHPK3PXPSECRET&issuer=sidecar"
CODES = [f"recovery-{n:02d}-secret" for n in range(10)]
KEY = "cHVibGljLWtleS1vZi10aGUtc2VjdXJpdHkta2V5LXNlY3JldA=="
KEY_ID = "a2V5LWlkLXNlY3JldA=="
HANDLE = "dXNlci1oYW5kbGUtc2VjcmV0"
ID_TOKEN = "eyJhbGciOiJSUzI1NiJ9.id-token-secret.sig"
REFRESH = "refresh-token-secret"
ADMIN_NOTE = "admin-only-note-secret"
SECRETS = [HASH, TOTP, *CODES, KEY, KEY_ID, HANDLE, ID_TOKEN, REFRESH, ADMIN_NOTE]
SCHEMA_URL = "http://127.0.0.1:4433/schemas/ZGVmYXVsdA"


def credentials() -> dict[str, Credential]:
    webauthn = {
        "credentials": [
            {
                "id": KEY_ID,
                "public_key": KEY,
                "attestation_type": "none",
                "authenticator": {"aaguid": "AAAAAAAAAAAAAAAAAAAAAA==", "sign_count": 3},
                "display_name": "key",
                "is_passwordless": False,
            }
        ],
        "user_handle": HANDLE,
    }
    oidc = {
        "providers": [
            {
                "provider": "google",
                "subject": "1234",
                "initial_id_token": ID_TOKEN,
                "initial_refresh_token": REFRESH,
            }
        ]
    }
    return {
        "password": Credential(
            type="password", identifiers=("a@example.com",), config={"hashed_password": HASH}
        ),
        "totp": Credential(type="totp", config={"totp_url": TOTP}),
        "lookup_secret": Credential(
            type="lookup_secret", config={"recovery_codes": [{"code": c, "used_at": None} for c in CODES]}
        ),
        "webauthn": Credential(type="webauthn", config=webauthn),
        "oidc": Credential(type="oidc", identifiers=("google:1234",), config=oidc),
    }


@pytest.fixture
async def db(tmp_path: Path) -> Any:
    from sidecar.storage.sql.database import SqlDatabase

    database = SqlDatabase(f"sqlite:///{tmp_path}/r.db")
    await database.migrate()
    yield database
    await database.close()


async def signed_in(db: Any) -> tuple[Identity, Session, str]:
    """A user with every field set and every kind of credential, and a session with methods and
    devices."""
    organization = await db.organizations.create(Organization(label="Acme", slug="acme"))
    identity = await db.identities.create(
        Identity(
            schema_id="default",
            traits={"email": "A@Example.com", "name": {"first": "Ann"}},
            state_changed_at=utcnow(),
            metadata_public={"roles": ["admin"]},
            metadata_admin={"note": ADMIN_NOTE},
            external_id="ext-1",
            organization_id=organization.id,
            verifiable_addresses=(
                VerifiableAddress(value="a@example.com", verified=True, status="completed"),
            ),
            recovery_addresses=(RecoveryAddress(value="a@example.com"),),
            credentials=credentials(),
        )
    )
    session = Session(
        identity_id=identity.id,
        expires_at=utcnow() + timedelta(hours=1),
        aal="aal2",
        authentication_methods=(
            AuthenticationMethod(method="oidc", provider="google", subject="1234", session_index="idx"),
            AuthenticationMethod(method="totp", aal="aal2"),
        ),
        devices=(Device(ip_address="192.0.2.1", user_agent="test"),),
        logout_token_digest="0" * 64,
    )
    token = new_session_token()
    await db.sessions.create(session, digest(token))
    return identity, session, token


def resolver_of(db: Any) -> SessionResolver:
    return SessionResolver(
        db.sessions,
        db.identities,
        ttl=timedelta(hours=1),
        assurance=assurance(),
        organizations=db.organizations,
    )


def whoami_of(resolver: SessionResolver) -> Whoami:
    return Whoami(
        resolver,
        required_aal="highest_available",
        public_base_url="http://127.0.0.1:4433",
        public_identity=lambda i: identity_to_json(i, schema_url=SCHEMA_URL, admin=False),
    )


def reachable(*roots: Any) -> Iterator[Any]:
    """Every object reachable from ``roots`` (``gc.get_referents``); classes, modules and code are
    not followed (they lead to the whole program, not to what the cache holds)."""
    seen: set[int] = set()
    stack = list(roots)
    skip = (type, type(sys), type(reachable), type(len), type(reachable.__code__))
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, skip):
            continue
        seen.add(id(obj))
        yield obj
        stack.extend(gc.get_referents(obj))


def secrets_in(*roots: Any) -> set[str]:
    found: set[str] = set()
    for obj in reachable(*roots):
        if isinstance(obj, (str, bytes, bytearray)):
            text = obj if isinstance(obj, str) else bytes(obj).decode("utf-8", "replace")
            found |= {s for s in SECRETS if s in text}
    return found


async def test_no_secret_is_reachable_from_a_cached_session(db: Any) -> None:
    identity, _, token = await signed_in(db)
    resolver = resolver_of(db)
    got = await resolver.resolve(token)
    assert got is not None and got.identity_id == identity.id
    # The level still comes from the credentials (TOTP, recovery codes, the security key) ...
    assert got.available_aal == "aal2" and got.organization_slug == "acme"
    whoami_of(resolver).answer_cached(token)  # ... and the whoami body is memoised on the entry
    assert "whoami" in got.memo
    # The secrets were read (the store's identity has them) ...
    assert secrets_in(await db.identities.get(identity.id)) == set(SECRETS)
    # ... and none of them is held by the cache: entries, the identity cache, the value itself.
    assert secrets_in(resolver._cache, resolver._identities, got) == set()


async def test_a_session_entry_loaded_with_the_identity_cached_holds_no_secret(db: Any) -> None:
    identity, _, token = await signed_in(db)
    second = Session(identity_id=identity.id, expires_at=utcnow() + timedelta(hours=1))
    token2 = new_session_token()
    await db.sessions.create(second, digest(token2))
    resolver = resolver_of(db)
    assert await resolver.resolve(token) is not None
    got = await resolver.resolve(token2)  # its identity from the identity cache
    assert got is not None and got.available_aal == "aal2"
    assert secrets_in(resolver._cache, resolver._identities, got) == set()


async def test_whoami_from_the_cache_is_what_the_loaded_identity_renders(db: Any) -> None:
    """Differential: the body whoami serves from a slim cache entry against the rendering of the
    session and identity exactly as the stores load them (credentials and all)."""
    identity, session, token = await signed_in(db)
    resolver = resolver_of(db)
    answer = await whoami_of(resolver).answer(token)
    loaded_session = await db.sessions.get(session.id)
    loaded = await db.identities.get(identity.id)
    assert loaded.credentials and loaded.metadata_admin  # the full identity
    expected = session_to_json(loaded_session, identity_to_json(loaded, schema_url=SCHEMA_URL, admin=False))
    assert answer.body == json.dumps(expected, separators=(",", ":"), default=str).encode()
    assert answer.identity_id == str(identity.id)
    body = json.loads(answer.body)
    # Kratos' whoami: no credentials, no admin metadata; every public field there.
    assert "credentials" not in body["identity"] and "metadata_admin" not in body["identity"]
    assert body["identity"]["external_id"] == "ext-1"
    assert body["identity"]["recovery_addresses"][0]["value"] == "a@example.com"
    assert body["identity"]["state_changed_at"] and body["identity"]["organization_id"]
    assert [m["method"] for m in body["authentication_methods"]] == ["oidc", "totp"]


def test_the_walk_finds_a_secret_held_by_an_entry() -> None:
    """The walk itself: a secret held deep in a credential's config is found."""
    identity = Identity(schema_id="default", traits={}, credentials=credentials())
    assert secrets_in({"k": (identity, uuid.uuid4())}) == set(SECRETS) - {ADMIN_NOTE}


@pytest.mark.parametrize(
    ("kinds", "level"),
    [
        (("password",), "aal1"),
        (("password", "oidc"), "aal1"),
        (("password", "totp"), "aal2"),
        (("password", "lookup_secret"), "aal2"),
        (("password", "webauthn"), "aal2"),
    ],
)
async def test_the_level_still_comes_from_every_second_factor(
    db: Any, kinds: tuple[str, ...], level: str
) -> None:
    """The resolver loads only the credential types the level is made of; each still counts."""
    every = credentials()
    identity = await db.identities.create(
        Identity(
            schema_id="default", traits={"email": "b@example.com"}, credentials={k: every[k] for k in kinds}
        )
    )
    session = Session(identity_id=identity.id, expires_at=utcnow() + timedelta(hours=1))
    token = new_session_token()
    await db.sessions.create(session, digest(token))
    got = await resolver_of(db).resolve(token)
    assert got is not None and got.available_aal == level


async def test_the_access_path_loads_only_the_second_factors(db: Any) -> None:
    """No password hash (nor OIDC tokens, nor admin metadata) is even read on a cache miss."""
    _, _, token = await signed_in(db)

    class Loads:
        asked: list[frozenset[str]] = []

        async def get_for_session(self, identity_id: uuid.UUID, types: Any) -> Identity | None:
            Loads.asked.append(frozenset(types))
            found: Identity | None = await db.identities.get_for_session(identity_id, types)
            return found

    resolver = SessionResolver(db.sessions, Loads(), ttl=timedelta(hours=1), assurance=assurance())  # type: ignore[arg-type]
    got = await resolver.resolve(token)
    assert got is not None and got.available_aal == "aal2"
    assert Loads.asked == [frozenset({"totp", "lookup_secret", "webauthn"})]

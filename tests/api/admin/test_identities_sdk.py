"""The admin identity API driven by the official ory-kratos-client SDK, on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Iterator
from typing import Any

import bcrypt
import ory_kratos_client as k
import pytest
from argon2 import PasswordHasher as Argon2
from ory_kratos_client.exceptions import ApiException

from tests.conftest import make_config
from tests.live import LiveSidecar, live_sidecar


@pytest.fixture
def sidecar(dsn: str) -> Iterator[LiveSidecar]:
    with live_sidecar(make_config(dsn=dsn)) as live:
        yield live


@pytest.fixture
def admin(sidecar: LiveSidecar) -> k.IdentityApi:
    return k.IdentityApi(k.ApiClient(k.Configuration(host=sidecar.admin_url)))


def _create(admin: k.IdentityApi, email: str, **credentials: object) -> k.Identity:
    body = k.CreateIdentityBody(
        schema_id="default",
        traits={"email": email, "name": {"first": "Ann", "last": "Lee"}},
        credentials=k.IdentityWithCredentials.from_dict(credentials) if credentials else None,
        metadata_public={"roles": ["reader"]},
        metadata_admin={"note": "vip"},
    )
    return admin.create_identity(create_identity_body=body)


def _credentials(identity: k.Identity) -> dict[str, Any]:
    assert identity.credentials is not None
    return dict(identity.credentials)


def test_round_trip(admin: k.IdentityApi, sidecar: LiveSidecar) -> None:
    # The SDK types every field Optional; the API always fills these, so they are read as Any.
    created: Any = _create(
        admin, "Ann@Example.test", password={"config": {"password": "correct horse battery staple"}}
    )
    assert created.schema_id == "default"
    assert created.state == "active"
    assert created.metadata_admin == {"note": "vip"}
    assert created.schema_url.endswith(
        "/schemas/" + base64.urlsafe_b64encode(b"default").decode().rstrip("=")
    )
    assert [a.value for a in created.verifiable_addresses] == ["ann@example.test"]
    assert created.verifiable_addresses[0].verified is False
    assert [a.value for a in created.recovery_addresses] == ["ann@example.test"]
    assert created.credentials is None  # credentials only with include_credential

    got: Any = admin.get_identity(created.id, include_credential=["password"])
    assert got.traits["email"] == "Ann@Example.test"
    assert got.credentials["password"].identifiers == ["ann@example.test"]
    assert got.credentials["password"].config["hashed_password"].startswith("$argon2id$")

    updated = admin.update_identity(
        created.id,
        update_identity_body=k.UpdateIdentityBody(
            schema_id="default", state="inactive", traits={"email": "ann2@example.test"}
        ),
    )
    assert updated.state == "inactive"
    assert updated.traits == {"email": "ann2@example.test"}
    by_new = admin.list_identities(credentials_identifier="ann2@example.test")
    assert [i.id for i in by_new] == [created.id]
    assert admin.list_identities(credentials_identifier="ann@example.test") == []

    patched: Any = admin.patch_identity(
        created.id,
        json_patch=[
            k.JsonPatch(op="replace", path="/traits/email", value="ann3@example.test"),
            k.JsonPatch(op="replace", path="/state", value="active"),
            k.JsonPatch(op="add", path="/metadata_public", value={"roles": ["admin"]}),
        ],
    )
    assert patched.traits["email"] == "ann3@example.test"
    assert patched.state == "active"
    assert patched.metadata_public == {"roles": ["admin"]}

    admin.delete_identity(created.id)
    with pytest.raises(ApiException) as err:
        admin.get_identity(created.id)
    assert err.value.status == 404


def test_pagination(admin: k.IdentityApi, sidecar: LiveSidecar) -> None:
    ids = {_create(admin, f"user{i}@example.test").id for i in range(7)}
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        resp: Any = admin.list_identities_with_http_info(page_size=3, page_token=token)
        seen += [i.id for i in resp.data]
        pages += 1
        link = {k.lower(): v for k, v in resp.headers.items()}["link"]
        assert 'rel="first"' in link
        if 'rel="next"' not in link:
            break
        token = link.split("page_token=")[1].split(">")[0]
    assert pages == 3
    assert sorted(seen) == sorted(ids)
    assert len(seen) == len(set(seen))
    by_ids = admin.list_identities(ids=sorted(ids)[:2])
    assert sorted(i.id for i in by_ids) == sorted(ids)[:2]


def test_import_hashes_then_login_ready(admin: k.IdentityApi, sidecar: LiveSidecar) -> None:
    argon = Argon2(memory_cost=8192, time_cost=1, parallelism=1).hash("argon-import-pass")
    bc = bcrypt.hashpw(b"bcrypt-import-pass", bcrypt.gensalt(rounds=4)).decode()
    salt = os.urandom(16)
    pbkdf = hashlib.pbkdf2_hmac("sha256", b"pbkdf2-import-pass", salt, 1000, 32)

    def b64(b: bytes) -> str:
        return base64.b64encode(b).decode().rstrip("=")

    pbkdf_enc = f"$pbkdf2-sha256$i=1000,l=32${b64(salt)}${b64(pbkdf)}"
    cases = [
        ("argon@example.test", argon, "argon-import-pass"),
        ("bcrypt@example.test", bc, "bcrypt-import-pass"),
    ]
    cases.append(("pbkdf@example.test", pbkdf_enc, "pbkdf2-import-pass"))
    manager = sidecar.services.identities
    for email, hashed, password in cases:
        created = _create(admin, email, password={"config": {"hashed_password": hashed}})
        got = admin.get_identity(created.id, include_credential=["password"])
        assert _credentials(got)["password"].config["hashed_password"] == hashed
        # Login-ready: the credential verifies through the same path a login takes.
        assert sidecar.run(manager.authenticate_password(email.upper(), password)) is not None
        assert sidecar.run(manager.authenticate_password(email, password + "x")) is None
    # A non-argon2 import is rehashed with the configured hasher after a successful login.
    bc_identity = admin.list_identities(credentials_identifier="bcrypt@example.test")[0]
    rehashed = admin.get_identity(bc_identity.id, include_credential=["password"])
    assert _credentials(rehashed)["password"].config["hashed_password"].startswith("$argon2id$")


def test_duplicate_is_conflict(admin: k.IdentityApi) -> None:
    _create(admin, "dup@example.test", password={"config": {"password": "correct horse battery staple"}})
    with pytest.raises(ApiException) as err:
        _create(admin, "DUP@example.test", password={"config": {"password": "correct horse battery staple"}})
    assert err.value.status == 409
    assert len(admin.list_identities(credentials_identifier="dup@example.test")) == 1

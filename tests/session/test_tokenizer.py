"""Session to JWT (Kratos ``session/tokenizer.go``, ``session/handler.go``'s ``tokenize_as``), through
``sidecar serve`` and the official SDK: Kratos' claims, the key's ``alg`` and ``kid``, a Jsonnet
claims mapper that cannot change ``sub``, ``subject_source: external_id``, and 400s with Kratos'
reasons."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, RSAKey
from ory_kratos_client.api.frontend_api import FrontendApi
from ory_kratos_client.api_client import ApiClient
from ory_kratos_client.configuration import Configuration
from ory_kratos_client.exceptions import ApiException

from tests.ops.serve import Proc, base_config, clean_env, ports, running, serve_argv, write_config

PASSWORD = "correct-Horse-battery-staple-42"
# Kratos' own test mapper (session/stub/rs512-template.jsonnet).
MAPPER = """
local claims = std.extVar('claims');
local session = std.extVar('session');

{
  claims: {
    foo: "bar",
    sub: "can not be overwritten",
    schema_id: session.identity.schema_id,
    aal: session.authenticator_assurance_level,
    second_claim: claims.exp,
    [if std.objectHas(session.identity, 'external_id') then 'external_id']: session.identity.external_id,
  }
}
"""


def private_jwks(key: Any) -> str:
    return json.dumps(KeySet([key]).as_dict(private=True))


@pytest.fixture(scope="module")
def keys() -> dict[str, Any]:
    return {
        "es": ECKey.generate_key("P-256", {"alg": "ES256", "kid": "es-key", "use": "sig"}),
        "rs": RSAKey.generate_key(2048, {"alg": "RS512", "kid": "rs-key", "use": "sig"}),
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, keys: dict[str, Any]) -> Iterator[Proc]:
    tmp = tmp_path_factory.mktemp("tokenizer")
    (tmp / "es.jwks.json").write_text(private_jwks(keys["es"]))
    (tmp / "mapper.jsonnet").write_text(MAPPER)
    rs = base64.b64encode(private_jwks(keys["rs"]).encode()).decode()
    public, admin = ports()
    config = base_config(
        tmp,
        public,
        admin,
        session={
            "whoami": {
                "tokenizer": {
                    "templates": {
                        "plain": {"jwks_url": "file://./es.jwks.json", "ttl": "10m"},
                        "mapped": {
                            "jwks_url": f"base64://{rs}",
                            "claims_mapper_url": "file://./mapper.jsonnet",
                        },
                        "external": {"jwks_url": "file://./es.jwks.json", "subject_source": "external_id"},
                    }
                }
            }
        },
    )
    path = write_config(tmp / "sidecar.yaml", config)
    subprocess.run(
        [sys.executable, "-m", "sidecar", "migrate", "up", "-c", str(path)],
        cwd="/",  # file://./ paths resolve against the config file's folder
        env=clean_env(),
        check=True,
        capture_output=True,
    )
    with running(serve_argv(path), cwd=tmp, public_port=public, admin_port=admin) as proc:
        yield proc


@pytest.fixture
def frontend(server: Proc) -> Iterator[FrontendApi]:
    with ApiClient(Configuration(host=server.public_url + "/.auth")) as client:
        yield FrontendApi(client)


def register(server: Proc, **extra: Any) -> tuple[str, str]:
    """A new identity (through the admin API when it needs an external_id) and a session token."""
    email = f"jwt-{uuid.uuid4().hex[:8]}@example.test"
    with httpx.Client() as client:
        if extra:
            created = client.post(
                f"{server.admin_url}/admin/identities",
                json={
                    "schema_id": "default",
                    "traits": {"email": email},
                    "credentials": {"password": {"config": {"password": PASSWORD}}},
                    **extra,
                },
            )
            assert created.status_code == 201, created.text
            flow = client.get(f"{server.public_url}/.auth/self-service/login/api").json()
            done = client.post(
                f"{server.public_url}/.auth/self-service/login?flow={flow['id']}",
                json={"method": "password", "identifier": email, "password": PASSWORD},
            ).json()
        else:
            flow = client.get(f"{server.public_url}/.auth/self-service/registration/api").json()
            done = client.post(
                f"{server.public_url}/.auth/self-service/registration?flow={flow['id']}",
                json={"method": "password", "password": PASSWORD, "traits": {"email": email}},
            ).json()
    return done["session"]["identity"]["id"], done["session_token"]


def verify(token: str, key: Any, alg: str) -> tuple[dict[str, Any], dict[str, Any]]:
    decoded = jwt.decode(token, key, algorithms=[alg])
    return dict(decoded.header), dict(decoded.claims)


def test_plain_template_signs_kratos_claims(
    frontend: FrontendApi, server: Proc, keys: dict[str, Any]
) -> None:
    identity_id, token = register(server)
    session = frontend.to_session(x_session_token=token, tokenize_as="plain")
    assert session.tokenized
    header, claims = verify(session.tokenized, keys["es"], "ES256")
    assert header == {"alg": "ES256", "kid": "es-key", "typ": "JWT"}
    assert claims["sub"] == identity_id and claims["sid"] == session.id
    assert claims["iss"] == server.public_url + "/.auth"
    assert claims["exp"] - claims["iat"] == 600 and claims["nbf"] == claims["iat"]
    assert uuid.UUID(claims["jti"])
    # Without tokenize_as there is no token.
    assert frontend.to_session(x_session_token=token).tokenized is None


def test_jsonnet_claims_are_merged_but_sub_stays(
    frontend: FrontendApi, server: Proc, keys: dict[str, Any]
) -> None:
    identity_id, token = register(server)
    session = frontend.to_session(x_session_token=token, tokenize_as="mapped")
    header, claims = verify(session.tokenized or "", keys["rs"], "RS512")
    assert header["alg"] == "RS512" and header["kid"] == "rs-key"
    assert claims["sub"] == identity_id
    assert claims["foo"] == "bar" and claims["schema_id"] == "default" and claims["aal"] == "aal1"
    assert claims["second_claim"] == claims["exp"] and claims["exp"] - claims["iat"] == 60


def test_external_id_subject(frontend: FrontendApi, server: Proc, keys: dict[str, Any]) -> None:
    external = f"ext-{uuid.uuid4().hex[:6]}"
    _, token = register(server, external_id=external)
    session = frontend.to_session(x_session_token=token, tokenize_as="external")
    assert verify(session.tokenized or "", keys["es"], "ES256")[1]["sub"] == external

    _, without = register(server)
    with pytest.raises(ApiException) as refused:
        frontend.to_session(x_session_token=without, tokenize_as="external")
    assert refused.value.status == 400
    assert json.loads(refused.value.body or "{}")["error"]["reason"] == (
        "The session's identity does not have an external ID set, but it is required for the subject claim."
    )


def test_unknown_template_is_a_400(frontend: FrontendApi, server: Proc) -> None:
    _, token = register(server)
    with pytest.raises(ApiException) as refused:
        frontend.to_session(x_session_token=token, tokenize_as="nope")
    assert refused.value.status == 400
    assert (
        json.loads(refused.value.body or "{}")["error"]["reason"]
        == 'Unable to find tokenizer template "nope".'
    )


def test_a_broken_key_set_fails_config_check(tmp_path: Path) -> None:
    (tmp_path / "public-only.json").write_text(
        json.dumps(KeySet([ECKey.generate_key("P-256", {"alg": "ES256"})]).as_dict(private=False))
    )
    (tmp_path / "no-alg.json").write_text(
        json.dumps(KeySet([ECKey.generate_key("P-256")]).as_dict(private=True))
    )
    config = base_config(
        tmp_path,
        *ports(),
        session={
            "whoami": {
                "tokenizer": {
                    "templates": {
                        "a": {"jwks_url": "file://./public-only.json"},
                        "b": {"jwks_url": "file://./no-alg.json"},
                        "c": {"jwks_url": "file://./missing.json"},
                    }
                }
            }
        },
    )
    path = write_config(tmp_path / "sidecar.yaml", config)
    out = subprocess.run(
        [sys.executable, "-m", "sidecar", "config", "check", str(path)],
        cwd="/",
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0 and "Traceback" not in out.stderr
    text = out.stdout + out.stderr
    assert "session.whoami.tokenizer.templates.a.jwks_url" in text and "private key" in text
    assert "session.whoami.tokenizer.templates.b.jwks_url" in text and '"alg" parameter' in text
    assert "session.whoami.tokenizer.templates.c.jwks_url" in text and "cannot read" in text

"""``selfservice.flows.registration.login_hints`` through a real sidecar: a registration that hits
an existing account says how that account signs in (Kratos ``identity/manager.go``
``findExistingAuthMethod``; wording from ``text/message_validation.go``
``NewErrorValidationDuplicateCredentialsWithHints``)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import make_config
from tests.live import LiveSidecar, live_sidecar

PASSWORD = "correct-Horse-battery-staple-42"


@pytest.fixture(params=[True, False], ids=["hints", "no-hints"])
def live(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LiveSidecar]:
    config = make_config(
        dsn=f"sqlite:///{tmp_path}/sidecar.db",
        selfservice={"flows": {"registration": {"login_hints": request.param}}},
    )
    with live_sidecar(config) as server:
        yield server


def register(live: LiveSidecar, email: str) -> httpx.Response:
    with httpx.Client(base_url=live.public_url) as client:
        flow = client.get("/self-service/registration/api").json()
        return client.post(
            f"/self-service/registration?flow={flow['id']}",
            json={"method": "password", "password": PASSWORD, "traits": {"email": email}},
        )


def messages(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 400, response.text
    return list(response.json()["ui"]["messages"])


def hints_on(live: LiveSidecar) -> bool:
    return bool(live.services.config.selfservice.flows.registration.login_hints)


def test_existing_password_account(live: LiveSidecar) -> None:
    email = f"taken-{uuid.uuid4().hex[:8]}@example.test"
    assert register(live, email).status_code == 200
    [message] = messages(register(live, email.upper()))
    if not hints_on(live):
        assert message["id"] == 4000007
        assert (
            message["text"]
            == "An account with the same identifier (email, phone, username, ...) exists already."
        )
        return
    assert message == {
        "id": 4000028,
        "type": "error",
        "text": f"You tried signing in with {email} which is already in use by another account. "
        "You can sign in using your password.",
        # The default schema makes the email a code identifier too; like Kratos, "code" is listed
        # but has no words in the text.
        "context": {
            "available_credential_types": ["code", "password"],
            "available_oidc_providers": [],
            "credential_identifier_hint": email,
        },
    }


def test_existing_social_account(live: LiveSidecar) -> None:
    email = f"social-{uuid.uuid4().hex[:8]}@example.test"
    created = httpx.post(
        f"{live.admin_url}/admin/identities",
        json={
            "schema_id": "default",
            "traits": {"email": email},
            "credentials": {
                "oidc": {
                    "config": {
                        "providers": [
                            {"provider": "google", "subject": "g-1"},
                            {"provider": "github", "subject": "gh-1"},
                        ]
                    }
                }
            },
        },
    )
    assert created.status_code == 201, created.text
    [message] = messages(register(live, email))
    if not hints_on(live):
        assert message["id"] == 4000007
        return
    assert message["id"] == 4000028
    assert message["text"] == (
        f"You tried signing in with {email} which is already in use by another account. "
        "You can sign in using social sign in. "
        "You can sign in using one of the following social sign in providers: Github, Google."
    )
    assert message["context"]["available_oidc_providers"] == ["github", "google"]
    assert message["context"]["available_credential_types"] == ["code", "oidc"]
    assert message["context"]["credential_identifier_hint"] == email


def test_wording_follows_kratos() -> None:
    from sidecar.identity.login_hints import LoginHints, hints_text

    assert hints_text(LoginHints(["password", "webauthn"], [], "a@x.test")) == (
        "You tried signing in with a@x.test which is already in use by another account. "
        "You can sign in using your password, or your passkey or a security key."
    )
    assert hints_text(LoginHints(["code"], [], "")) == (
        "You tried signing in with an email, phone, or username which is already in use by another "
        "account. You can sign in using code."
    )

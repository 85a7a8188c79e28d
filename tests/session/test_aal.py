"""Authenticator assurance levels from credentials (Kratos ``highest_available``)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sidecar.identity.model import Credential, Identity, utcnow
from sidecar.session import aal
from sidecar.session.model import Session
from sidecar.strategies.registry import assurance

# The strategies' own declarations (totp, lookup_secret, webauthn), as the app builds it.
ASSURANCE = assurance()


def _identity(*credentials: Credential) -> Identity:
    return Identity(schema_id="default", traits={}, credentials={c.type: c for c in credentials})


PASSWORD = Credential(type="password", config={"hashed_password": "x"})
TOTP = Credential(type="totp", config={"totp_url": "otpauth://totp/x?secret=JBSWY3DPEHPK3PXP"})
PASSKEY_ONLY = Credential(type="webauthn", config={"credentials": [{"is_passwordless": True}]})
SECURITY_KEY = Credential(type="webauthn", config={"credentials": [{"is_passwordless": False}]})


@pytest.mark.parametrize(
    ("credentials", "expected"),
    [
        pytest.param((PASSWORD,), "aal1", id="password"),
        pytest.param((PASSWORD, TOTP), "aal2", id="password+totp"),
        pytest.param((PASSWORD, Credential(type="totp")), "aal1", id="empty-totp"),
        pytest.param((PASSWORD, PASSKEY_ONLY), "aal1", id="passwordless-webauthn"),
        pytest.param((PASSWORD, SECURITY_KEY), "aal2", id="webauthn-second-factor"),
    ],
)
def test_available_aal(credentials: tuple[Credential, ...], expected: str) -> None:
    assert ASSURANCE.available_aal(_identity(*credentials)) == expected


def test_second_factors_in_declared_order() -> None:
    codes = Credential(type="lookup_secret", config={"recovery_codes": [{"code": "x"}, {"used_at": "t"}]})
    identity = _identity(PASSWORD, SECURITY_KEY, codes, TOTP)
    assert ASSURANCE.second_factors(identity) == ["totp", "lookup_secret", "webauthn"]
    used_up = Credential(type="lookup_secret", config={"recovery_codes": [{"used_at": "t"}]})
    assert ASSURANCE.second_factors(_identity(PASSWORD, used_up)) == []


def test_assurance_knows_only_what_it_is_given() -> None:
    """``sidecar.session.aal`` names no method: with no second factors declared, all is aal1."""
    nothing = aal.Assurance([])
    assert nothing.available_aal(_identity(PASSWORD, TOTP)) == "aal1" and nothing.methods == frozenset()


def test_satisfies() -> None:
    session = Session(identity_id=_identity().id, expires_at=utcnow() + timedelta(hours=1), aal="aal1")
    with_totp = _identity(PASSWORD, TOTP)
    assert ASSURANCE.satisfies(session, with_totp, "aal1")
    assert not ASSURANCE.satisfies(session, with_totp, "highest_available")
    assert ASSURANCE.satisfies(session, _identity(PASSWORD), "highest_available")


def test_urls() -> None:
    base = "https://auth.example.test/.auth"
    assert aal.step_up_url(base) == base + "/self-service/login/browser?aal=aal2"
    assert aal.step_up_url(base, "https://app.example.test/x?y=1") == (
        base + "/self-service/login/browser?aal=aal2&return_to=https%3A%2F%2Fapp.example.test%2Fx%3Fy%3D1"
    )
    error = aal.aal2_required(base)
    assert error.error_id == "session_aal2_required" and error.code == 403
    assert error.extra["redirect_browser_to"] == base + "/self-service/login/browser?aal=aal2"


RULES = """
rules:
  - id: home
    match: { paths: [/home] }
    require: optional
  - id: app
    match: { paths: ["/app/**"] }
    require: authenticated
  - id: mfa
    match: { paths: ["/mfa/**"] }
    require: { level: authenticated, aal: aal2 }
"""


@pytest.mark.parametrize(
    ("path", "session_aal", "required", "expected", "anonymous"),
    [
        pytest.param("/app/x", "aal1", "highest_available", "step_up", False, id="first-factor-only"),
        pytest.param("/app/x", "aal2", "highest_available", "allow", False, id="second-factor-done"),
        pytest.param("/app/x", "aal1", "aal1", "allow", False, id="aal1-configured"),
        pytest.param("/home", "aal1", "highest_available", "allow", True, id="optional-is-anonymous"),
        pytest.param("/mfa/x", "aal1", "aal1", "step_up", False, id="rule-needs-aal2"),
    ],
)
def test_proxy_uses_available_aal(
    path: str, session_aal: str, required: str, expected: str, anonymous: bool
) -> None:
    """No first factor skips a configured second factor on the access path either."""
    from sidecar.rules.decision import judge
    from sidecar.rules.loader import parse_rules
    from sidecar.session.resolver import resolved

    rule = parse_rules([("rules.yaml", RULES)]).match("GET", "app.test", path)
    assert rule is not None
    identity = _identity(PASSWORD, TOTP)
    session = Session(identity_id=identity.id, expires_at=utcnow() + timedelta(hours=1), aal=session_aal)
    subject = resolved(session, identity, ASSURANCE.available_aal(identity))
    verdict, _, identified = judge(rule, subject, required)
    assert verdict.value == expected
    assert (not identified) == anonymous

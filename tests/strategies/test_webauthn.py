"""The relying party glue and the stored-key helpers, without HTTP (``sidecar.security.webauthn_rp``,
``sidecar.strategies.webauthn_keys``)."""

from __future__ import annotations

import json

import pytest

from sidecar.config.model import WebAuthnRp
from sidecar.identity.model import Credential
from sidecar.security import webauthn_rp as rp_mod
from sidecar.security.webauthn_rp import RelyingParty, WebAuthnError
from sidecar.strategies import webauthn_keys as wk
from tests.strategies.webauthn_device import SoftAuthenticator

RP = RelyingParty(id="127.0.0.1", name="Test", origins=("http://127.0.0.1:4433",))


@pytest.mark.parametrize(
    ("rp", "base", "expected"),
    [
        pytest.param(
            WebAuthnRp(),
            "http://localhost:8080/.auth",
            ("localhost", ("http://localhost:8080",)),
            id="defaults",
        ),
        pytest.param(
            WebAuthnRp(id="example.com", origin="https://login.example.com"),
            "http://127.0.0.1/.auth",
            ("example.com", ("https://login.example.com",)),
            id="kratos-single-origin",
        ),
        pytest.param(
            WebAuthnRp(id="example.com", origins=["https://a.example.com/", "https://b.example.com"]),
            "http://127.0.0.1/.auth",
            ("example.com", ("https://a.example.com", "https://b.example.com")),
            id="origins",
        ),
    ],
)
def test_relying_party_from_config(rp: WebAuthnRp, base: str, expected: tuple[str, tuple[str, ...]]) -> None:
    party = RelyingParty.from_config(rp, base)
    assert (party.id, party.origins) == expected


def _registered() -> tuple[SoftAuthenticator, rp_mod.NewKey]:
    device = SoftAuthenticator()
    challenge = rp_mod.new_challenge()
    options = rp_mod.creation_options(RP, challenge, user_id=b"u" * 16, user_name="a", display_name="a")
    key = rp_mod.verify_creation(RP, rp_mod.parse_response(device.create(options)), challenge)
    return device, key


def test_registration_and_assertion_round_trip() -> None:
    device, key = _registered()
    assert key.id == device.credential_id and key.sign_count == 0
    challenge = rp_mod.new_challenge()
    options = rp_mod.request_options(RP, challenge, allow=[key.id])
    response = rp_mod.parse_response(device.get(options))
    count = rp_mod.verify_assertion(RP, response, challenge, public_key=key.public_key, sign_count=0)
    assert count == 1
    # The same answer against a counter that is already ahead: a cloned key.
    with pytest.raises(WebAuthnError):
        rp_mod.verify_assertion(RP, response, challenge, public_key=key.public_key, sign_count=5)
    # Another challenge: refused.
    with pytest.raises(WebAuthnError):
        rp_mod.verify_assertion(RP, response, rp_mod.new_challenge(), public_key=key.public_key, sign_count=0)


@pytest.mark.parametrize(
    "raw", ["not json", json.dumps([1]), json.dumps({"id": 5}), "x" * (rp_mod.MAX_RESPONSE_CHARS + 1)]
)
def test_malformed_responses_are_refused(raw: str) -> None:
    with pytest.raises(WebAuthnError):
        rp_mod.parse_response(raw)


def test_key_identifiers_follow_the_keys() -> None:
    _, first = _registered()
    _, second = _registered()
    credential = wk.add_key(None, "webauthn", wk.key_record(first, "one", False), ("a@example.test",), b"h")
    credential = wk.add_key(credential, "webauthn", wk.key_record(second, "two", False), (), b"h")
    assert credential.identifiers == (
        "a@example.test",
        wk.key_identifier(first.id),
        wk.key_identifier(second.id),
    )
    assert [k.display_name for k in wk.stored_keys(credential)] == ["one", "two"]
    bumped = wk.with_counter(credential, second.id, 7)
    assert [k.sign_count for k in wk.stored_keys(bumped)] == [0, 7]
    left = wk.drop_key(bumped, first.id)
    assert isinstance(left, Credential)
    assert left.identifiers == ("a@example.test", wk.key_identifier(second.id))
    assert wk.drop_key(left, second.id) is None
    assert wk.user_handle_of(credential) == b"h"

"""The WebAuthn relying party (W3C WebAuthn Level 2), as glue over py_webauthn.

Options go to the browser as Kratos sends them: ``{"publicKey": {...}}`` with base64url byte
fields (what ``webauthn.js`` decodes). Verification checks the challenge, the RP id hash, the
origin against ``rp.origins``, user presence (and verification where asked), the signature and,
for assertions, the signature counter: a counter that does not grow (when either side is non-zero)
means a cloned authenticator and is refused (§6.1.1 "signCount").

Stored keys follow Kratos' ``identity.CredentialWebAuthn`` JSON: ``id``, ``public_key`` and
``authenticator.aaguid`` are standard base64, as Go marshals ``[]byte``.
"""

from __future__ import annotations

import base64
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sidecar.config.model import WebAuthnRp

if TYPE_CHECKING:
    from webauthn.helpers.structs import PublicKeyCredentialDescriptor

# py_webauthn (about 50 ms of imports: cbor2, pyOpenSSL, asn1 modules) is imported by the functions
# that use it, and by ``RelyingParty.from_config``: a server with WebAuthn or passkeys enabled loads
# it while building its strategies (and fails there if it is missing); one without never does.

CHALLENGE_BYTES = 32
TIMEOUT_MS = 300_000
MAX_RESPONSE_CHARS = 64 * 1024


class WebAuthnError(Exception):
    """A registration or assertion the relying party refuses (the reason is for logs, not users)."""


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def from_b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64std(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def from_b64std(text: str) -> bytes:
    return base64.b64decode(text)


@dataclass(frozen=True, slots=True)
class RelyingParty:
    id: str
    name: str
    origins: tuple[str, ...]

    @classmethod
    def from_config(cls, rp: WebAuthnRp, public_base_url: str) -> RelyingParty:
        import webauthn  # noqa: F401  (loaded with the method that needs it; see the top)

        base = urlsplit(public_base_url)
        origins = tuple(o.rstrip("/") for o in rp.origin_list()) or (f"{base.scheme}://{base.netloc}",)
        return cls(id=rp.id or base.hostname or "localhost", name=rp.display_name, origins=origins)


@dataclass(frozen=True, slots=True)
class NewKey:
    """A verified registration, ready to store."""

    id: bytes
    public_key: bytes
    sign_count: int
    aaguid: bytes
    attestation_type: str
    user_verified: bool


def new_challenge() -> bytes:
    return secrets.token_bytes(CHALLENGE_BYTES)


def _descriptors(ids: Sequence[bytes]) -> list[PublicKeyCredentialDescriptor]:
    from webauthn.helpers.structs import PublicKeyCredentialDescriptor

    return [PublicKeyCredentialDescriptor(id=i) for i in ids]


def creation_options(
    rp: RelyingParty,
    challenge: bytes,
    *,
    user_id: bytes,
    user_name: str,
    display_name: str,
    exclude: Sequence[bytes] = (),
    resident_key: bool = False,
) -> dict[str, Any]:
    from webauthn import generate_registration_options, options_to_json
    from webauthn.helpers.structs import (
        AuthenticatorSelectionCriteria,
        ResidentKeyRequirement,
        UserVerificationRequirement,
    )

    selection = AuthenticatorSelectionCriteria(
        resident_key=ResidentKeyRequirement.REQUIRED if resident_key else ResidentKeyRequirement.DISCOURAGED,
        require_resident_key=resident_key,
        user_verification=(
            UserVerificationRequirement.REQUIRED if resident_key else UserVerificationRequirement.DISCOURAGED
        ),
    )
    options = generate_registration_options(
        rp_id=rp.id,
        rp_name=rp.name,
        user_id=user_id,
        user_name=user_name or display_name or "user",
        user_display_name=display_name or user_name or "user",
        challenge=challenge,
        timeout=TIMEOUT_MS,
        authenticator_selection=selection,
        exclude_credentials=_descriptors(exclude),
    )
    return {"publicKey": json.loads(options_to_json(options))}


def request_options(
    rp: RelyingParty, challenge: bytes, *, allow: Sequence[bytes] = (), user_verification: bool = False
) -> dict[str, Any]:
    from webauthn import generate_authentication_options, options_to_json
    from webauthn.helpers.structs import UserVerificationRequirement

    options = generate_authentication_options(
        rp_id=rp.id,
        challenge=challenge,
        timeout=TIMEOUT_MS,
        allow_credentials=_descriptors(allow),
        user_verification=(
            UserVerificationRequirement.REQUIRED
            if user_verification
            else UserVerificationRequirement.DISCOURAGED
        ),
    )
    public_key = json.loads(options_to_json(options))
    public_key.setdefault("allowCredentials", [])
    return {"publicKey": public_key}


def parse_response(raw: Any) -> dict[str, Any]:
    """The browser's JSON (a string in a form field, or an object in a JSON body)."""
    if isinstance(raw, str):
        if len(raw) > MAX_RESPONSE_CHARS:
            raise WebAuthnError("the WebAuthn response is too large")
        try:
            raw = json.loads(raw)
        except ValueError as exc:
            raise WebAuthnError("the WebAuthn response is not JSON") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("rawId") or raw.get("id"), str):
        raise WebAuthnError("the WebAuthn response is not a credential")
    return raw


def credential_id(response: dict[str, Any]) -> bytes:
    try:
        return from_b64url(str(response.get("rawId") or response["id"]))
    except (ValueError, KeyError) as exc:
        raise WebAuthnError("the credential id is not base64url") from exc


def user_handle(response: dict[str, Any]) -> bytes | None:
    inner = response.get("response")
    handle = inner.get("userHandle") if isinstance(inner, dict) else None
    if not isinstance(handle, str) or not handle:
        return None
    try:
        return from_b64url(handle)
    except ValueError:
        return None


def verify_creation(
    rp: RelyingParty, response: dict[str, Any], challenge: bytes, *, require_uv: bool = False
) -> NewKey:
    from webauthn import verify_registration_response
    from webauthn.helpers.exceptions import WebAuthnException

    try:
        verified = verify_registration_response(
            credential=response,
            expected_challenge=challenge,
            expected_rp_id=rp.id,
            expected_origin=list(rp.origins),
            require_user_verification=require_uv,
        )
    except (WebAuthnException, ValueError, KeyError, TypeError) as exc:
        raise WebAuthnError(f"registration refused: {exc}") from exc
    aaguid = verified.aaguid.replace("-", "")
    return NewKey(
        id=verified.credential_id,
        public_key=verified.credential_public_key,
        sign_count=verified.sign_count,
        aaguid=bytes.fromhex(aaguid) if len(aaguid) == 32 else b"",
        attestation_type=str(verified.fmt.value if hasattr(verified.fmt, "value") else verified.fmt),
        user_verified=verified.user_verified,
    )


def verify_assertion(
    rp: RelyingParty,
    response: dict[str, Any],
    challenge: bytes,
    *,
    public_key: bytes,
    sign_count: int,
    require_uv: bool = False,
) -> int:
    """The authenticator's new signature counter; WebAuthnError when anything does not hold."""
    from webauthn import verify_authentication_response
    from webauthn.helpers.exceptions import WebAuthnException

    try:
        verified = verify_authentication_response(
            credential=response,
            expected_challenge=challenge,
            expected_rp_id=rp.id,
            expected_origin=list(rp.origins),
            credential_public_key=public_key,
            credential_current_sign_count=sign_count,
            require_user_verification=require_uv,
        )
    except (WebAuthnException, ValueError, KeyError, TypeError) as exc:
        raise WebAuthnError(f"assertion refused: {exc}") from exc
    return int(verified.new_sign_count)

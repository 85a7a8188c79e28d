"""Authenticator assurance levels (NIST 800-63B AAL as Kratos uses them, kratos-api.md §6).

``aal1`` is one factor; ``aal2`` a second factor completed in the same session. The level an
identity *can* reach is computed from all of its credentials, so that with ``required_aal:
highest_available`` no first factor skips a second factor the user has set up.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from sidecar import errors
from sidecar.identity.model import Credential, Identity
from sidecar.session.model import Session

SECOND_FACTORS = ("totp", "lookup_secret", "webauthn")
"""Credential types that lift a session to aal2 (webauthn only when not passwordless)."""


def _usable(credential: Credential) -> bool:
    config: Mapping[str, Any] = credential.config
    if credential.type == "totp":
        return bool(config.get("totp_url"))
    if credential.type == "lookup_secret":
        codes = config.get("recovery_codes")
        return isinstance(codes, list) and any(isinstance(c, Mapping) and not c.get("used_at") for c in codes)
    if credential.type == "webauthn":
        keys = config.get("credentials")
        return isinstance(keys, list) and any(
            isinstance(k, Mapping) and not k.get("is_passwordless") for k in keys
        )
    return False


def second_factors(identity: Identity) -> list[str]:
    """The second-factor methods ``identity`` has set up and can use now, in a stable order."""
    return [t for t in SECOND_FACTORS if t in identity.credentials and _usable(identity.credentials[t])]


def available_aal(identity: Identity) -> str:
    return "aal2" if second_factors(identity) else "aal1"


def satisfies(session: Session, identity: Identity, required: str) -> bool:
    """Kratos' ``DoesSessionSatisfy``: ``aal1`` always; ``highest_available`` needs the top level."""
    if required == "highest_available":
        return session.aal >= available_aal(identity)
    return True


def step_up_url(public_base_url: str, return_to: str | None = None) -> str:
    query = {"aal": "aal2", **({"return_to": return_to} if return_to else {})}
    return f"{public_base_url}/self-service/login/browser?{urlencode(query)}"


def refresh_url(public_base_url: str, return_to: str) -> str:
    query = urlencode({"refresh": "true", "return_to": return_to})
    return f"{public_base_url}/self-service/login/browser?{query}"


def aal2_required(public_base_url: str, return_to: str | None = None) -> errors.AAL2Required:
    return errors.AAL2Required(extra={"redirect_browser_to": step_up_url(public_base_url, return_to)})

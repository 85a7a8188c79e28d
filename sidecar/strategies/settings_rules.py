"""Small rules the settings strategies share: privileged changes, form booleans, lockouts, and
what the second-factor strategies need of the identity manager."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Protocol

from sidecar import errors
from sidecar.flows import messages
from sidecar.flows.outcome import FlowInvalid
from sidecar.flows.strategy import SettingsContext
from sidecar.identity.model import Credential, Identity


class CredentialIdentities(Protocol):
    """The part of ``IdentityManager`` the second-factor strategies use."""

    async def get(self, identity_id: uuid.UUID) -> Identity: ...

    async def save_credential(self, identity_id: uuid.UUID, credential: Credential) -> Identity: ...

    async def remove_credential(self, identity_id: uuid.UUID, credential_type: str) -> Identity: ...


def require_privileged(ctx: SettingsContext) -> None:
    """Kratos: password, MFA and protected-trait changes need ``privileged_session_max_age``."""
    if not ctx.privileged:
        raise errors.RefreshRequired()


def flag(body: Mapping[str, Any], name: str) -> bool:
    """A boolean field from JSON (``true``) or a form button (``"true"``)."""
    value = body.get(name)
    if isinstance(value, bool):
        return value
    return isinstance(value, str) and value.strip().lower() in ("true", "1", "on")


def rate_limited(retry_after: int) -> FlowInvalid:
    return FlowInvalid(
        [messages.rate_limited(retry_after)], status=429, headers={"Retry-After": str(retry_after)}
    )

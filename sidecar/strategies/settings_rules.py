"""Small rules the settings strategies share: privileged changes, form booleans, lockouts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sidecar import errors
from sidecar.flows import messages
from sidecar.flows.outcome import FlowInvalid
from sidecar.flows.strategy import SettingsContext


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

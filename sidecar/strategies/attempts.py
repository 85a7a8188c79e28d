"""Credential checks counted by the brute-force throttle (``security/throttle.py``) the same way
in every strategy: each scope admitted before the check (a closed gate: 429 with
``Retry-After``), a rejected check (``FlowInvalid``) counted as a failure on every scope, a good one
clearing the identifier's failures. Anything else (a store down) counts neither way.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sidecar.flows.outcome import FlowInvalid
from sidecar.security.throttle import Throttle
from sidecar.strategies.settings_rules import rate_limited

Scope = tuple[str, str | None, str | None]
"""``(scope, identifier, client ip)`` as ``Throttle.admit`` takes them."""


@contextlib.asynccontextmanager
async def counted(throttle: Throttle, *scopes: Scope) -> AsyncIterator[None]:
    """``async with counted(throttle, ("login", identifier, ip)): <check, raising FlowInvalid>``."""
    for scope, identifier, ip in scopes:
        verdict = await throttle.admit(scope, identifier=identifier, ip=ip)
        if not verdict.allowed:
            raise rate_limited(verdict.retry_after)
    try:
        yield
    except FlowInvalid:
        for scope, identifier, ip in scopes:
            await throttle.failed(scope, identifier=identifier, ip=ip)
        raise
    for scope, identifier, ip in scopes:
        await throttle.succeeded(scope, identifier=identifier, ip=ip)

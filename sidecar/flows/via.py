"""The provider sign-in a strategy proved in this submission, for the session it leads to.

A federated strategy knows which connection signed the person in (SAML, OIDC), and for SAML the
subject it named and the identity provider's session; the login or registration flow issues the
session. The strategy leaves a ``ProviderSignIn`` in the flow's ``internal`` context and the flow
takes it (once) when it issues or refreshes the session, which records it in
``authentication_methods`` (Kratos' ``provider``; SAML's single logout).
Taken before every attempt too, so a sign-in that failed later never lends its record to another.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from sidecar.flows.model import Flow
from sidecar.session.model import ProviderSignIn

KEY = "signed_in_via"


def remember(flow: Flow, via: ProviderSignIn) -> None:
    flow.internal[KEY] = asdict(via)


def take(flow: Flow) -> ProviderSignIn | None:
    raw: Any = flow.internal.pop(KEY, None)
    if not isinstance(raw, dict) or not isinstance(raw.get("provider"), str):
        return None
    text = {k: v if isinstance(v, str) else None for k, v in raw.items()}
    return ProviderSignIn(
        provider=raw["provider"],
        subject=text.get("subject"),
        subject_format=text.get("subject_format"),
        session_index=text.get("session_index"),
    )

"""Authenticator assurance levels (NIST 800-63B AAL as Kratos uses them, kratos-api.md §6).

``aal1`` is one factor; ``aal2`` a second factor completed in the same session. The level an
identity *can* reach is computed from all of its credentials, so that with ``required_aal:
highest_available`` no first factor skips a second factor the user has set up. Which methods are
second factors, and when one is set up, is for the strategies to say: ``Assurance`` is built from
their declarations (``sidecar.strategies.registry.assurance``) and names none of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from urllib.parse import urlencode

from sidecar import errors
from sidecar.identity.model import Identity
from sidecar.session.model import Session

SecondFactorReady = Callable[[Identity], bool]


class Assurance:
    def __init__(self, second_factors: Sequence[tuple[str, SecondFactorReady]]) -> None:
        """``second_factors``: (method, "is it set up for this identity?") in a stable order."""
        self._second_factors = tuple(second_factors)
        self.methods = frozenset(method for method, _ in self._second_factors)
        """The methods whose credentials count toward the level an identity can reach."""

    def second_factors(self, identity: Identity) -> list[str]:
        """The second-factor methods ``identity`` has set up and can use now, in a stable order."""
        return [method for method, ready in self._second_factors if ready(identity)]

    def available_aal(self, identity: Identity) -> str:
        return "aal2" if any(ready(identity) for _, ready in self._second_factors) else "aal1"

    def satisfies(self, session: Session, identity: Identity, required: str) -> bool:
        """Kratos' ``DoesSessionSatisfy``: ``aal1`` always; ``highest_available`` needs the top level."""
        if required == "highest_available":
            return session.aal >= self.available_aal(identity)
        return True


def step_up_url(public_base_url: str, return_to: str | None = None) -> str:
    query = {"aal": "aal2", **({"return_to": return_to} if return_to else {})}
    return f"{public_base_url}/self-service/login/browser?{urlencode(query)}"


def refresh_url(public_base_url: str, return_to: str) -> str:
    query = urlencode({"refresh": "true", "return_to": return_to})
    return f"{public_base_url}/self-service/login/browser?{query}"


def aal2_required(public_base_url: str, return_to: str | None = None) -> errors.AAL2Required:
    return errors.AAL2Required(extra={"redirect_browser_to": step_up_url(public_base_url, return_to)})

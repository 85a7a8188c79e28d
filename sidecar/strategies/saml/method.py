"""``selfservice.methods.saml`` in the strategy registry, loading pysaml2 only when it is enabled.

``SamlStrategy`` and the modules under it import pysaml2 (~0.5 s of CPU, ``sidecar.strategies.saml
.binding``), so the registry lists this class instead: it answers what the registry asks of every
method, enabled or not (``id``, ``counts_toward_aal``, ``second_factor_ready``), and imports
``SamlStrategy`` in ``build`` when the method is on.
"""

from __future__ import annotations

from typing import ClassVar

from sidecar.identity.model import Identity
from sidecar.strategies.deps import Roles, StrategyDeps


class SamlMethod:
    id: ClassVar[str] = "saml"
    counts_toward_aal: ClassVar[bool] = False
    """A SAML sign-in is a first factor (as ``SamlStrategy``; tests/strategies/test_registry.py)."""

    @staticmethod
    def second_factor_ready(identity: Identity) -> bool:
        return False

    @classmethod
    def build(cls, deps: StrategyDeps) -> Roles | None:
        if not deps.config.selfservice.methods.saml.enabled:
            return None
        # The import that loads pysaml2 (see the module docstring).
        from sidecar.strategies.saml.strategy import SamlStrategy

        return SamlStrategy.build(deps)

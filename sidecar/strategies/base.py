"""What a flow asks of a strategy (Kratos ``selfservice/flow/login/strategy.go`` and friends).

A strategy adds its UI nodes to a new flow and handles a submission whose ``method`` names it;
for any other submission it returns ``NOT_RESPONSIBLE`` so the flow asks the next one. A rejected
submission raises ``sidecar.flows.outcome.FlowInvalid``. Flows only know these protocols.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Protocol

from sidecar.flows.model import Flow
from sidecar.flows.nodes import Node
from sidecar.flows.outcome import Client
from sidecar.identity.model import Identity


class NotResponsible:
    """Sentinel: "this submission is not mine"."""

    _instance: NotResponsible | None = None

    def __new__(cls) -> NotResponsible:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NOT_RESPONSIBLE"


NOT_RESPONSIBLE: Final = NotResponsible()


class Strategy(Protocol):
    @property
    def id(self) -> str:
        """The ``method`` value this strategy answers to (``password``, ``profile``, ...)."""
        ...


class LoginStrategy(Strategy, Protocol):
    def login_nodes(self, flow: Flow) -> list[Node]: ...

    async def login(self, flow: Flow, body: Mapping[str, Any], client: Client) -> Identity | NotResponsible:
        """The authenticated identity, or NOT_RESPONSIBLE; raises FlowInvalid when rejected."""
        ...


class RegistrationStrategy(Strategy, Protocol):
    def registration_nodes(self, flow: Flow) -> list[Node]: ...

    async def register(
        self, flow: Flow, body: Mapping[str, Any], client: Client
    ) -> Identity | NotResponsible:
        """The created (persisted) identity, or NOT_RESPONSIBLE; raises FlowInvalid when rejected."""
        ...

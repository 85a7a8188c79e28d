"""The ``profile`` strategy: the traits part of registration.

In the one-step ("unified" with ``enable_legacy_one_step``) layout, Kratos puts the traits nodes in
the ``password`` group and submits them with ``method=password``; otherwise they sit in ``default``.
The two-step ``profile_first`` screens (``method=profile`` + ``screen``) are not implemented yet,
so this strategy answers no submission.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sidecar.config.model import Config
from sidecar.flows.model import Flow
from sidecar.flows.nodes import Node
from sidecar.flows.outcome import Client
from sidecar.identity.model import Identity
from sidecar.schema.registry import SchemaRegistry
from sidecar.strategies.base import NOT_RESPONSIBLE, NotResponsible
from sidecar.strategies.traits import trait_nodes


class ProfileStrategy:
    id = "profile"

    def __init__(self, config: Config, schemas: SchemaRegistry) -> None:
        self._flow_config = config.selfservice.flows.registration
        self._password_enabled = config.selfservice.methods.password.enabled
        self._schemas = schemas

    def registration_nodes(self, flow: Flow) -> list[Node]:
        schema = self._schemas.get(flow.identity_schema) if flow.identity_schema else self._schemas.default()
        one_step = self._flow_config.style == "unified" and self._flow_config.enable_legacy_one_step
        return trait_nodes(schema, "password" if one_step and self._password_enabled else "default")

    async def register(
        self, flow: Flow, body: Mapping[str, Any], client: Client
    ) -> Identity | NotResponsible:
        return NOT_RESPONSIBLE

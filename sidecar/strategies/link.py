"""The ``link`` strategy: a one-time link by email, for recovery and verification (Kratos
``selfservice/strategy/link``). The form asks for ``email``; the mail carries
``<public>/self-service/<flow>?flow=<id>&token=<token>`` and a GET on it passes the challenge.

Tokens are 32 alphanumerics (~190 bits), stored as digests, single use and bound to their flow.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from sidecar.config.model import Config
from sidecar.courier.model import TemplateType
from sidecar.flows import messages, nodes
from sidecar.flows.model import Flow
from sidecar.flows.nodes import Node
from sidecar.flows.outcome import Client
from sidecar.flows.strategy import (
    NOT_RESPONSIBLE,
    ChallengeResult,
    ChallengeSent,
    NotResponsible,
)
from sidecar.security.onetime import new_link_token
from sidecar.strategies.address_challenge import AddressChallenge, ChallengeDeps, Purpose, clean_address
from sidecar.strategies.deps import Roles, StrategyDeps


class LinkStrategy(AddressChallenge):
    id = "link"
    kind = "link"

    @classmethod
    def build(cls, deps: StrategyDeps) -> Roles | None:
        if not deps.config.selfservice.methods.link.enabled or deps.challenge is None:
            return None
        strategy = cls(deps.config, deps.challenge)
        return Roles(recovery=strategy, verification=strategy)

    def __init__(self, config: Config, deps: ChallengeDeps) -> None:
        super().__init__(config, deps)
        self._method = config.selfservice.methods.link.config

    @property
    def lifespan(self) -> timedelta:
        return self._method.lifespan

    def new_secret(self) -> str:
        return new_link_token()

    def template(self, purpose: Purpose, known: bool) -> TemplateType:
        if purpose == "recovery":
            return "recovery_valid" if known else "recovery_invalid"
        return "verification_valid" if known else "verification_invalid"

    def link_url(self, purpose: Purpose, flow: Flow, token: str) -> str:
        base = (self._method.base_url or self._config.public_base_url).rstrip("/")
        return f"{base}/self-service/{purpose}?{urlencode({'flow': str(flow.id), 'token': token})}"

    def template_data(self, purpose: Purpose, flow: Flow, secret: str) -> dict[str, Any]:
        return {f"{purpose}_url": self.link_url(purpose, flow, secret)}

    @staticmethod
    def email_nodes(value: str | None = None) -> list[Node]:
        return [
            nodes.input_node(
                "email",
                "link",
                "email",
                value=value,
                required=True,
                autocomplete="email",
                label=messages.label_email(),
            ),
            nodes.submit_node("link", "link", messages.label_submit()),
        ]

    @staticmethod
    def show_sent(flow: Flow, purpose: Purpose, email: str | None) -> None:
        flow.state = "sent_email"
        flow.active = "link"
        keep = [n for n in flow.ui.nodes if n["group"] == "default"]
        flow.ui.nodes = keep + LinkStrategy.email_nodes(email)
        sent = messages.recovery_link_sent() if purpose == "recovery" else messages.verification_link_sent()
        flow.ui.messages = [sent]

    async def _handle(
        self, purpose: Purpose, flow: Flow, body: Mapping[str, Any], client: Client
    ) -> ChallengeResult | NotResponsible:
        token = body.get("token")
        if isinstance(token, str) and token:
            # The mail's link: a GET without ``method``.
            return await self.check(purpose, flow, token, messages.challenge_token_invalid(purpose))
        if body.get("method") != self.id:
            return NOT_RESPONSIBLE
        address = clean_address(body.get("email"))
        await self.send(purpose, flow, address, client)
        self.show_sent(flow, purpose, address)
        return ChallengeSent()

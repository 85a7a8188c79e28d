"""The verification flow (kratos-api.md §1.4, §6): prove control of a verifiable address.

It works with or without a session and never creates or changes one. After a registration (with
``selfservice.flows.verification.enabled``) ``after_registration`` starts one flow per unverified
address, mails it, and returns the ``show_verification_ui`` continue_with items.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sidecar.flows import messages, nodes
from sidecar.flows.challenge_flow import ChallengeFlows
from sidecar.flows.model import Flow, FlowType
from sidecar.flows.nodes import Node
from sidecar.flows.outcome import Client, Outcome, ShowFlow
from sidecar.flows.strategy import ChallengePassed, ChallengeResult, NotResponsible, VerificationStrategy
from sidecar.identity.model import Identity


def continue_node(href: str) -> Node:
    return {
        "type": "a",
        "group": "code",
        "attributes": {"id": "continue", "href": href, "title": messages.label_continue(), "node_type": "a"},
        "messages": [],
        "meta": {"label": messages.label_continue()},
    }


class VerificationFlows(ChallengeFlows[VerificationStrategy]):
    kind = "verification"

    def _strategy_nodes(self, strategy: VerificationStrategy, flow: Flow) -> list[Node]:
        return list(strategy.verification_nodes(flow))

    async def _run(
        self, strategy: VerificationStrategy, flow: Flow, body: Mapping[str, Any], client: Client
    ) -> ChallengeResult | NotResponsible:
        return await strategy.verify(flow, body, client)

    async def init(
        self, flow_type: FlowType, client: Client, *, request_url: str, return_to: str | None = None
    ) -> ShowFlow:
        self.ensure_enabled()
        checked = self.life.check_return_to(return_to)
        flow = self.build(flow_type, request_url=request_url, return_to=checked, csrf_token=client.csrf_token)
        return await self.life.show_new(flow, client)

    async def _passed(self, flow: Flow, passed: ChallengePassed, client: Client) -> Outcome:
        flow.state = "passed_challenge"
        flow.ui.messages = [messages.verification_successful()]
        keep = [n for n in flow.ui.nodes if n["group"] == "default"]
        href = flow.return_to or self.life.after_url(flow, flow.active or "code")
        flow.ui.nodes = [*keep, continue_node(href)]
        nodes.clear_messages(flow.ui.nodes)
        await self.life.store.save(flow)
        await self.life.web_hooks.after(
            flow, flow.active or self.flow_config.use, client, identity=passed.identity
        )
        self.audit.emit(
            "verification.completed",
            client,
            identity_id=passed.identity.id,
            method=flow.active or self.flow_config.use,
            via=passed.via,
            flow_id=flow.id,
            flow_type=flow.type,
        )
        return ShowFlow(flow)

    async def after_registration(self, identity: Identity, origin: Flow) -> list[dict[str, Any]]:
        """Kratos' verification hook: mail each unverified address, one flow per address."""
        if not self.enabled:
            return []
        strategy = self.strategy
        items: list[dict[str, Any]] = []
        for address in identity.verifiable_addresses:
            if address.verified or address.via not in strategy.channels:
                continue
            flow = self.build(
                origin.type,
                request_url=origin.request_url,
                return_to=origin.return_to,
                csrf_token=origin.csrf_token,
            )
            await strategy.send_verification(flow, identity, address.value, address.via, address.id)
            await self.life.store.save(flow)
            item: dict[str, Any] = {"id": str(flow.id), "verifiable_address": address.value}
            if flow.type == "browser":
                item["url"] = self.life.ui_redirect(flow)
            items.append({"action": "show_verification_ui", "flow": item})
        return items

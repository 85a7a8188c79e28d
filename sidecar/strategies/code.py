"""The ``code`` strategy: a 6-digit one-time code by email, for recovery and verification.

Recovery (Kratos ``selfservice/strategy/code/strategy_recovery.go``): the form asks for ``email``;
the answer is ``sent_email`` with a ``code`` input and a "resend" button (``email`` again, which
replaces the sent code). A right code passes the challenge. Verification works the same way, and
its mail also carries a link (``?flow=&code=``) that submits the code with a GET.

Wrong codes answer 200 with 4060006 / 4070006 (as Kratos); every code submission counts against
``selfservice.methods.code.config.max_submissions``, and past it the flow takes no code at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import urlencode

from sidecar import errors
from sidecar.config.model import Config
from sidecar.courier.model import TemplateType
from sidecar.flows import messages, nodes
from sidecar.flows.model import Flow
from sidecar.flows.nodes import Node
from sidecar.flows.outcome import Client, FlowInvalid
from sidecar.flows.strategy import (
    NOT_RESPONSIBLE,
    ChallengeResult,
    ChallengeSent,
    NotResponsible,
)
from sidecar.security.onetime import CODE_DIGITS, new_code
from sidecar.strategies.address_challenge import AddressChallenge, ChallengeDeps, Purpose, clean_address
from sidecar.strategies.deps import Roles, StrategyDeps

TOO_OFTEN = "The request was submitted too often. Please request another code."


class CodeStrategy(AddressChallenge):
    id = "code"
    kind = "code"
    channels = frozenset({"email", "sms"})

    @classmethod
    def build(cls, deps: StrategyDeps) -> Roles | None:
        if not deps.config.selfservice.methods.code.enabled or deps.challenge is None:
            return None
        strategy = cls(deps.config, deps.challenge)
        return Roles(recovery=strategy, verification=strategy)

    def __init__(self, config: Config, deps: ChallengeDeps) -> None:
        super().__init__(config, deps)
        self._method = config.selfservice.methods.code.config

    @property
    def lifespan(self) -> timedelta:
        return self._method.lifespan

    def new_secret(self) -> str:
        return new_code()

    def template(self, purpose: Purpose, known: bool) -> TemplateType:
        if purpose == "recovery":
            return "recovery_code_valid" if known else "recovery_code_invalid"
        return "verification_code_valid" if known else "verification_code_invalid"

    def template_data(self, purpose: Purpose, flow: Flow, secret: str) -> dict[str, Any]:
        if purpose == "recovery":
            return {"recovery_code": secret}
        query = urlencode({"flow": str(flow.id), "code": secret})
        return {
            "verification_code": secret,
            "verification_url": f"{self._config.public_base_url}/self-service/verification?{query}",
            "expires_in_minutes": int(self.lifespan.total_seconds() // 60),
        }

    # --- nodes -----------------------------------------------------------------------------------
    @staticmethod
    def email_nodes() -> list[Node]:
        return [
            nodes.input_node(
                "email", "code", "email", required=True, autocomplete="email", label=messages.label_email()
            ),
            nodes.submit_node("code", "code", messages.label_submit()),
        ]

    def admin_nodes(self) -> list[Node]:
        return self.code_nodes("recovery", None)

    @staticmethod
    def code_nodes(purpose: Purpose, email: str | None) -> list[Node]:
        label = (
            messages.label_recovery_code() if purpose == "recovery" else messages.label_verification_code()
        )
        out = [
            nodes.input_node(
                "code",
                "code",
                "text",
                required=True,
                autocomplete="one-time-code",
                pattern="[0-9]+",
                maxlength=CODE_DIGITS,
                label=label,
            ),
            nodes.input_node("method", "code", "hidden", value="code"),
            nodes.submit_node("code", "code", messages.label_submit()),
        ]
        if email:
            out.append(
                nodes.input_node("email", "code", "submit", value=email, label=messages.label_resend_code())
            )
        return out

    @staticmethod
    def show_sent(flow: Flow, purpose: Purpose, email: str | None) -> None:
        flow.state = "sent_email"
        flow.active = "code"
        keep = [n for n in flow.ui.nodes if n["group"] == "default"]
        flow.ui.nodes = keep + CodeStrategy.code_nodes(purpose, email)
        sent = messages.recovery_code_sent() if purpose == "recovery" else messages.verification_code_sent()
        flow.ui.messages = [sent]

    # --- submissions -----------------------------------------------------------------------------
    async def _handle(
        self, purpose: Purpose, flow: Flow, body: Mapping[str, Any], client: Client
    ) -> ChallengeResult | NotResponsible:
        method = body.get("method")
        code = body.get("code")
        # A GET landing from the verification mail carries ``code`` without ``method``.
        if method != self.id and not (method is None and isinstance(code, str) and code):
            return NOT_RESPONSIBLE
        email = body.get("email")
        if email or flow.state == "choose_method":
            address = clean_address(email)
            await self.send(purpose, flow, address, client)
            self.show_sent(flow, purpose, address)
            return ChallengeSent()
        if not isinstance(code, str) or not code.strip():
            raise FlowInvalid(node_messages={"code": [messages.required("code")]}, status=400)
        count = await self.secrets(purpose).count_submission(flow.id, flow.expires_at - flow.issued_at)
        if count > self._method.max_submissions:
            raise errors.BadRequest(TOO_OFTEN, reason=TOO_OFTEN)
        return await self.check(purpose, flow, code.strip(), messages.challenge_code_invalid(purpose))

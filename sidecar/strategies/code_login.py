"""The ``code`` strategy for passwordless login and registration (Kratos
``selfservice/strategy/code/strategy_login.go`` and ``strategy_registration.go``).

On when ``selfservice.methods.code.passwordless_enabled`` is set. States go ``choose_method`` →
``sent_email`` → ``passed_challenge``: the first submission (``identifier``, or the ``traits``)
mails a 6-digit code to the identity's code identifier (schema ``credentials.code.identifier``),
the second one (``code``) proves it; ``resend=code`` mails a new one and the old one stops working.

Codes come from ``secrets`` and are kept only as a digest bound to the flow (``OneTimeSecrets``):
single use, ``config.lifespan`` long, and every code submission counts against
``config.max_submissions`` before the code is compared; past it the flow takes no code at all.

Account enumeration (``security.account_enumeration.mitigate``): off, an unknown login identifier
gets 4000035 and a taken registration address 4000007 right away (Kratos); on, both get the same
"code sent" answer, with a decoy code stored and no mail sent, and fail only at the code step.

With ``mfa_enabled`` a code is also a second factor: an ``aal=aal2`` flow offers one "send code
to <address>" button per code address of the session's identity (Kratos' ``address`` field), and
the code lifts the session to aal2, unless the session's first factor was itself a code: two codes
over one channel are one factor, never aal2.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Final, Literal, Protocol

from sidecar import errors
from sidecar.config.model import Config
from sidecar.courier.model import TemplateType, is_phone
from sidecar.flows import messages, nodes
from sidecar.flows.model import Flow
from sidecar.flows.nodes import Node
from sidecar.flows.outcome import Client, FlowInvalid
from sidecar.flows.strategy import NOT_RESPONSIBLE, LoginStrategy, NotResponsible, RegistrationStrategy
from sidecar.identity.manager import IdentitySpec
from sidecar.identity.model import Identity
from sidecar.schema.registry import SchemaRegistry
from sidecar.security.identifiers import normalize_identifier
from sidecar.security.onetime import CODE_DIGITS, Grant, OneTimeSecrets, new_code
from sidecar.strategies.address_challenge import ChallengeDeps
from sidecar.strategies.deps import Roles, StrategyDeps
from sidecar.strategies.settings_rules import rate_limited
from sidecar.strategies.traits import flatten, traits_refused, validation_messages
from sidecar.strategies.webauthn_keys import KeyIdentities

Purpose = Literal["login", "registration"]
KIND: Final = "code"
DECOY = uuid.UUID(int=0)
ADDRESS_KEY = "code_address"
TRAITS_KEY = "code_traits"
TOO_OFTEN = "The request was submitted too often. Please request another code."


class CodeIdentities(KeyIdentities, Protocol):
    async def find_by_address(self, via: str, value: str) -> Identity | None: ...


class CodeLoginStrategy(LoginStrategy, RegistrationStrategy):
    """Login and registration by emailed code; recovery and verification are ``CodeStrategy``'s."""

    id = KIND

    @classmethod
    def build(cls, deps: StrategyDeps) -> Roles | None:
        code = deps.config.selfservice.methods.code
        if not code.enabled or deps.challenge is None or not (code.passwordless_enabled or code.mfa_enabled):
            return None
        strategy = cls(deps.config, deps.identities, deps.schemas, deps.challenge)
        return Roles(login=strategy, registration=strategy)

    def __init__(
        self, config: Config, identities: CodeIdentities, schemas: SchemaRegistry, deps: ChallengeDeps
    ) -> None:
        self._passwordless = config.selfservice.methods.code.passwordless_enabled
        self._fallback = config.selfservice.methods.code.config.missing_credential_fallback_enabled
        self.second_factor = config.selfservice.methods.code.mfa_enabled
        self._method = config.selfservice.methods.code.config
        self._mitigate = config.security.account_enumeration.mitigate
        self._identities = identities
        self._schemas = schemas
        self._deps = deps
        self._secrets: dict[Purpose, OneTimeSecrets] = {
            "login": OneTimeSecrets(deps.kv, "login"),
            "registration": OneTimeSecrets(deps.kv, "registration"),
        }

    # --- nodes ----------------------------------------------------------------------------------

    def login_nodes(self, flow: Flow) -> list[Node]:
        if flow.requested_aal == "aal2" or not self._passwordless:
            return []  # aal2: ``prepare_login`` knows the identity's addresses
        out: list[Node] = []
        if flow.ui.node("identifier") is None:
            out.append(
                nodes.input_node(
                    "identifier", "default", "text", required=True, label=messages.label_identifier()
                )
            )
        return [*out, nodes.submit_node(KIND, KIND, messages.code_send("login"))]

    def login_credential_nodes(self, flow: Flow, identity: Identity | None) -> list[Node] | None:
        # Kratos code/strategy_login.go: with passwordless on, any account can get a code.
        if not self._passwordless:
            return None
        return [nodes.submit_node(KIND, KIND, messages.code_send("login"))]

    async def prepare_login(self, flow: Flow, identity: Identity) -> None:
        if not self.second_factor:
            return
        for address in self._addresses(identity):
            label = messages.code_send_to(address)
            flow.ui.nodes.append(nodes.input_node("address", KIND, "submit", value=address, label=label))

    def registration_nodes(self, flow: Flow) -> list[Node]:
        if not self._passwordless:
            return []
        return [nodes.submit_node(KIND, KIND, messages.code_send("registration"))]

    def _code_step(self, flow: Flow, purpose: Purpose) -> None:
        """``sent_email``: the shared inputs stay (the login identifier hidden), the code is asked."""
        flow.state = "sent_email"
        kept: list[Node] = []
        for node in flow.ui.nodes:
            if node["group"] != "default" or node["attributes"].get("name") == "identifier":
                continue
            kept.append(node)
        if purpose == "login":
            kept.append(
                nodes.input_node("identifier", "default", "hidden", value=flow.internal.get(ADDRESS_KEY))
            )
        code = nodes.input_node(
            "code",
            KIND,
            "text",
            required=True,
            autocomplete="one-time-code",
            pattern="[0-9]+",
            maxlength=CODE_DIGITS,
            label=messages.code_label(purpose),
        )
        resend = nodes.input_node("resend", KIND, "submit", value=KIND, label=messages.label_resend_code())
        # The hidden method rides along with the "resend" button of a plain HTML form.
        method = nodes.input_node("method", KIND, "hidden", value=KIND)
        submit = nodes.submit_node(KIND, KIND, messages.label_continue())
        flow.ui.nodes = [*kept, method, code, submit, resend]

    def _addresses(self, identity: Identity) -> list[str]:
        """Where a second-factor code may go: the code credential's addresses; with
        ``missing_credential_fallback_enabled`` and none, every verifiable email address (Kratos
        ``strategy_mfa.go`` ``FindCodeAddressCandidates``)."""
        found = _addresses(identity)
        return found if found or not self._fallback else _emails(identity)

    # --- sending ----------------------------------------------------------------------------------

    async def _send(
        self,
        purpose: Purpose,
        flow: Flow,
        address: str,
        identity_id: uuid.UUID,
        client: Client,
        data: dict[str, Any],
    ) -> None:
        verdict = await self._deps.send_limiter.hit(f"{purpose}_code_send", identifier=address, ip=client.ip)
        if not verdict.allowed:
            raise rate_limited(verdict.retry_after)
        code = new_code()
        now = self._deps.clock()
        # Identifiers are stored normalised: a phone number (a code identifier ``via: sms``) is
        # E.164, and gets its code by text message (Kratos' login_code / registration_code sms).
        via = "sms" if is_phone(address) else "email"
        grant = Grant(flow.id, identity_id, address, via, now + self._method.lifespan)
        await self._secrets[purpose].store(KIND, code, grant, now)
        if identity_id == DECOY:
            return  # enumeration mitigation: the same store work, and no mail for an unknown address
        template: TemplateType = "login_code_valid" if purpose == "login" else "registration_code_valid"
        key = "login_code" if purpose == "login" else "registration_code"
        try:
            await self._deps.courier.send(template, address, {key: code, **data}, via=via)
        except ValueError:
            raise FlowInvalid([messages.invalid_email()]) from None

    async def _take(self, purpose: Purpose, flow: Flow, code: Any) -> Grant:
        if not isinstance(code, str) or not code.strip():
            raise FlowInvalid(node_messages={"code": [messages.required("code")]})
        secrets = self._secrets[purpose]
        count = await secrets.count_submission(flow.id, flow.expires_at - flow.issued_at)
        if count > self._method.max_submissions:
            raise FlowInvalid([messages.generic(TOO_OFTEN)])
        grant = await secrets.take(KIND, flow.id, code.strip())
        if grant is None or grant.identity_id == DECOY or grant.is_expired(self._deps.clock()):
            raise FlowInvalid([messages.code_invalid(purpose)])
        return grant

    # --- login ------------------------------------------------------------------------------------

    async def login(self, flow: Flow, body: Mapping[str, Any], client: Client) -> Identity | NotResponsible:
        if flow.requested_aal == "aal2":
            # Kratos: in an aal2 flow the "send code to <address>" button alone names the method.
            if not self.second_factor or not (body.get("method") == KIND or body.get("address")):
                return NOT_RESPONSIBLE
            return await self._second_factor(flow, body, client)
        if body.get("method") != KIND or not self._passwordless:
            return NOT_RESPONSIBLE
        if body.get("resend") == KIND or flow.state == "choose_method":
            await self._login_send(flow, body, client)
            self._code_step(flow, "login")
            # Kratos answers "code sent" to JSON clients with the flow and 400 (not done yet).
            raise FlowInvalid([messages.code_sent("login")])
        grant = await self._take("login", flow, body.get("code"))
        identity = await self._identities.get(grant.identity_id)
        if identity.state != "active":
            raise FlowInvalid([messages.account_disabled()])
        return await self._verified(identity, grant.address)

    async def _second_factor(self, flow: Flow, body: Mapping[str, Any], client: Client) -> Identity:
        session = client.session
        if session is None:
            raise errors.SessionAAL1Required()
        if any(m.method == KIND for m in session.authentication_methods):
            raise FlowInvalid(
                [
                    messages.generic(
                        "A code sent to the same address cannot be the second factor of a code sign-in."
                    )
                ]
            )
        identity = await self._identities.get(session.identity_id)
        if body.get("resend") == KIND or flow.state == "choose_method":
            wanted = flow.internal.get(ADDRESS_KEY) if body.get("resend") == KIND else body.get("address")
            known = self._addresses(identity)
            address = wanted if isinstance(wanted, str) and wanted in known else None
            if address is None:
                raise FlowInvalid([messages.code_not_your_address()])
            flow.internal[ADDRESS_KEY] = address
            data = {"identity": _template_identity(identity)}
            await self._send("login", flow, address, identity.id, client, data)
            self._code_step(flow, "login")
            raise FlowInvalid([messages.code_sent("login")])
        grant = await self._take("login", flow, body.get("code"))
        if grant.identity_id != identity.id:
            raise FlowInvalid([messages.code_invalid("login")])
        return identity

    async def _login_send(self, flow: Flow, body: Mapping[str, Any], client: Client) -> None:
        resend = body.get("resend") == KIND and flow.state == "sent_email"
        identifier = flow.internal.get(ADDRESS_KEY) if resend else body.get("identifier")
        if not isinstance(identifier, str) or not identifier.strip():
            raise FlowInvalid(node_messages={"identifier": [messages.required("identifier")]})
        address = normalize_identifier(identifier.strip(), KIND, via="email")
        identity = await self._identities.find_by_credential(KIND, address)
        if identity is None and self._fallback:
            # Kratos' migration path (strategy_login.go findIdentityByIdentifier): an identity whose
            # schema marks no code identifier may still get a code, here only at one of its own
            # email addresses.
            owner = await self._identities.find_by_address("email", address)
            if owner is not None and not _addresses(owner) and address in _emails(owner):
                identity = owner
        if identity is None or identity.state != "active":
            if not self._mitigate:
                raise FlowInvalid([messages.code_no_account()], values={"identifier": identifier})
            identity_id = DECOY
        else:
            identity_id = identity.id
        flow.internal[ADDRESS_KEY] = address
        data = {"identity": _template_identity(identity)} if identity is not None else {}
        await self._send("login", flow, address, identity_id, client, data)

    # --- registration -----------------------------------------------------------------------------

    async def register(
        self, flow: Flow, body: Mapping[str, Any], client: Client
    ) -> Identity | NotResponsible:
        if body.get("method") != KIND or not self._passwordless:
            return NOT_RESPONSIBLE
        schema = self._schemas.get_or_default(flow.identity_schema)
        traits = body.get("traits")
        kept = flatten(traits)
        if body.get("resend") == KIND and isinstance(flow.internal.get(TRAITS_KEY), dict):
            traits = flow.internal[TRAITS_KEY]
        problems = validation_messages(schema, traits)
        if problems or not isinstance(traits, Mapping):
            raise FlowInvalid(
                node_messages=problems or {"traits": [messages.required("traits")]}, values=kept
            )
        if flow.state == "sent_email" and body.get("resend") != KIND:
            if dict(traits) != flow.internal.get(TRAITS_KEY):
                raise FlowInvalid([messages.code_traits_changed()], values=kept)
            await self._take("registration", flow, body.get("code"))
            return await self._create(flow, schema.id, dict(traits), kept)
        addresses = schema.code_identifiers(traits)
        if not addresses:
            raise FlowInvalid([messages.no_login_identifiers()])
        address = addresses[0][0]
        taken = await self._identities.find_by_credential(KIND, address) is not None
        if taken and not self._mitigate:
            raise FlowInvalid([messages.duplicate_credentials()], values=kept)
        flow.internal[TRAITS_KEY] = dict(traits)
        flow.internal[ADDRESS_KEY] = address
        data = {"traits": dict(traits)}
        await self._send("registration", flow, address, DECOY if taken else uuid.uuid4(), client, data)
        self._code_step(flow, "registration")
        raise FlowInvalid([messages.code_sent("registration")], values=kept)

    async def _create(
        self, flow: Flow, schema_id: str, traits: dict[str, Any], kept: dict[str, Any]
    ) -> Identity:
        try:
            identity = await self._identities.create(IdentitySpec(traits=traits, schema_id=schema_id))
        except errors.Conflict as exc:
            raise traits_refused(exc, kept) from None
        try:
            return await self._verified(identity, str(flow.internal.get(ADDRESS_KEY)))
        except Exception:
            await self._identities.delete(identity.id)  # all or nothing (flows/registration.py)
            raise

    async def _verified(self, identity: Identity, address: str) -> Identity:
        """The code proved control of ``address``: it is verified now (Kratos does the same)."""
        for verifiable in identity.verifiable_addresses:
            if verifiable.value == address and not verifiable.verified:
                await self._deps.addresses.mark_address_verified(verifiable.id)
                return await self._identities.get(identity.id)
        return identity


def _template_identity(identity: Identity) -> dict[str, Any]:
    return {"id": str(identity.id), "traits": identity.traits, "schema_id": identity.schema_id}


def _addresses(identity: Identity) -> list[str]:
    credential = identity.credentials.get(KIND)
    return list(credential.identifiers) if credential else []


def _emails(identity: Identity) -> list[str]:
    return [a.value for a in identity.verifiable_addresses if a.via == "email" and a.value]

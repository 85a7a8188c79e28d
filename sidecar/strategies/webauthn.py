"""The ``webauthn`` strategy: security keys (Kratos ``selfservice/strategy/webauthn``).

Keys are added in the settings flow. With ``selfservice.methods.webauthn.config.passwordless``
off they are a second factor: an ``aal=aal2`` login offers them (the allowed keys are put into the
options when the flow starts) and a good assertion lifts the session to aal2. With it on, new keys
are registered as passwordless (resident, user-verifying) and sign in on their own, Kratos' two
steps: ``identifier`` first, then the assertion for that identity's keys. A passwordless key never
counts as a second factor and a second-factor key never signs in alone (as in Kratos).

Registration offers a passwordless key only in passwordless mode, as Kratos does.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping
from typing import Any, Final

from sidecar import errors
from sidecar.config.model import Config
from sidecar.flows import messages, nodes
from sidecar.flows.model import Flow
from sidecar.flows.nodes import Node
from sidecar.flows.outcome import Client, FlowInvalid
from sidecar.flows.strategy import (
    NOT_RESPONSIBLE,
    LoginStrategy,
    NotResponsible,
    RegistrationStrategy,
    SettingsContext,
    SettingsStrategy,
    SettingsUpdate,
)
from sidecar.identity.model import Identity
from sidecar.kv.store import KeyValueStore
from sidecar.schema.model import IdentitySchema
from sidecar.schema.registry import SchemaRegistry
from sidecar.security.identifiers import normalize_identifier
from sidecar.security.throttle import Throttle
from sidecar.security.webauthn_rp import (
    RelyingParty,
    WebAuthnError,
    b64url,
    creation_options,
    credential_id,
    from_b64url,
    parse_response,
    request_options,
    verify_assertion,
)
from sidecar.strategies import webauthn_keys as wk
from sidecar.strategies.attempts import counted
from sidecar.strategies.deps import Roles, StrategyDeps
from sidecar.strategies.key_accounts import create_with_credential, other_first_factor
from sidecar.strategies.settings_rules import rate_limited, require_privileged

KIND: Final = "webauthn"
IDENTITY_KEY = "webauthn_identity"
HANDLE_KEY = "webauthn_user_handle"


class WebAuthnStrategy(LoginStrategy, RegistrationStrategy, SettingsStrategy):
    id = KIND
    second_factor = True
    counts_toward_aal = True

    @staticmethod
    def second_factor_ready(identity: Identity) -> bool:
        """A security key that is not a passwordless one (those are a first factor)."""
        credential = identity.credentials.get(KIND)
        keys = credential.config.get("credentials") if credential is not None else None
        return isinstance(keys, list) and any(
            isinstance(k, Mapping) and not k.get("is_passwordless") for k in keys
        )

    @classmethod
    def build(cls, deps: StrategyDeps) -> Roles | None:
        if not deps.config.selfservice.methods.webauthn.enabled:
            return None
        strategy = cls(deps.config, deps.identities, deps.schemas, deps.kv, deps.throttle)
        return Roles(login=strategy, registration=strategy, settings=strategy)

    def __init__(
        self,
        config: Config,
        identities: wk.KeyIdentities,
        schemas: SchemaRegistry,
        kv: KeyValueStore,
        throttle: Throttle,
    ) -> None:
        method = config.selfservice.methods.webauthn.config
        self.first_factor = method.passwordless
        self._rp = RelyingParty.from_config(method.rp, config.public_base_url)
        self._base = config.public_base_url
        self._mitigate = config.security.account_enumeration.mitigate
        self._identities = identities
        self._schemas = schemas
        self._throttle = throttle
        self._challenges = wk.Challenges(kv, KIND)
        self._new_keys = wk.NewKeys(self._rp, self._challenges, identities, KIND, "security key")

    def _keys(self, identity: Identity, *, passwordless: bool) -> list[wk.StoredKey]:
        found = wk.stored_keys(identity.credentials.get(KIND))
        return [k for k in found if k.is_passwordless == passwordless]

    # --- login ----------------------------------------------------------------------------------

    def login_nodes(self, flow: Flow) -> list[Node]:
        out: list[Node] = []
        if flow.requested_aal != "aal2" and flow.ui.node("identifier") is None:
            out.append(
                nodes.input_node(
                    "identifier", "default", "text", required=True, label=messages.label_identifier()
                )
            )
        out.append(nodes.submit_node(KIND, KIND, messages.webauthn_login()))
        return out

    def login_credential_nodes(self, flow: Flow, identity: Identity | None) -> list[Node] | None:
        # Kratos webauthn/login.go: passwordless keys in browser flows, for an identity with keys.
        if not self.first_factor or flow.type != "browser":
            return None
        if identity is not None and KIND not in identity.credentials:
            return None
        return [nodes.submit_node(KIND, KIND, messages.webauthn_login())]

    def _assertion_nodes(self, flow: Flow, keys: list[wk.StoredKey]) -> None:
        challenge = self._challenges.issue(flow, "login")
        options = request_options(
            self._rp, challenge, allow=[k.id for k in keys], user_verification=self.first_factor
        )
        out = [
            wk.hidden("webauthn_login", KIND),
            wk.trigger(
                "webauthn_login_trigger",
                KIND,
                "oryWebAuthnLogin",
                messages.webauthn_login_continue(),
                wk.options_json(options),
            ),
        ]
        wk.add_script(out, flow, self._base, KIND)
        wk.replace_nodes(flow, KIND, out)

    async def prepare_login(self, flow: Flow, identity: Identity) -> None:
        """aal2: the identity's second-factor keys go straight into the options."""
        self._assertion_nodes(flow, self._keys(identity, passwordless=False))

    async def login(self, flow: Flow, body: Mapping[str, Any], client: Client) -> Identity | NotResponsible:
        if not wk.claims(body, KIND, "webauthn_login"):
            return NOT_RESPONSIBLE
        raw = body.get("webauthn_login")
        if flow.requested_aal == "aal2":
            if client.session is None:
                raise errors.SessionAAL1Required()
            identity = await self._identities.get(client.session.identity_id)
            keys = self._keys(identity, passwordless=False)
            if not keys:
                raise FlowInvalid([messages.webauthn_no_keys()])
        else:
            if not self.first_factor:
                return NOT_RESPONSIBLE
            if not raw:
                await self._identify(flow, body, client)
            identity, keys = await self._flow_identity(flow)
        if not raw:
            self._assertion_nodes(flow, keys)
            raise FlowInvalid(status=200)
        try:
            return await self._check(flow, identity, keys, raw)
        except FlowInvalid:
            self._assertion_nodes(flow, keys)
            raise

    async def _identify(self, flow: Flow, body: Mapping[str, Any], client: Client) -> None:
        """Passwordless step one: remember whose keys the assertion must come from."""
        identifier = body.get("identifier")
        if not isinstance(identifier, str) or not identifier.strip():
            raise FlowInvalid(node_messages={"identifier": [messages.required("identifier")]})
        # Probing identifiers is what this step allows: an unknown one (or one without a key)
        # counts as a failure; the key itself cannot be guessed.
        verdict = await self._throttle.admit("login", identifier=identifier, ip=client.ip)
        if not verdict.allowed:
            raise rate_limited(verdict.retry_after)
        identity = await self._identities.find_by_credential(KIND, normalize_identifier(identifier))
        keys = self._keys(identity, passwordless=True) if identity else []
        if identity is None or not keys:
            await self._throttle.failed("login", identifier=identifier, ip=client.ip)
        else:
            await self._throttle.succeeded("login", identifier=identifier, ip=client.ip)
        if identity is None or not keys:
            if not self._mitigate:
                raise FlowInvalid([messages.webauthn_no_user_or_key()], values={"identifier": identifier})
            # Enumeration mitigation: the same next step, for a key that does not exist.
            flow.internal[IDENTITY_KEY] = str(uuid.UUID(int=0))
            flow.internal["webauthn_decoy"] = b64url(secrets.token_bytes(32))
        else:
            flow.internal[IDENTITY_KEY] = str(identity.id)
        nodes.set_value(flow.ui.nodes, "identifier", identifier)

    async def _flow_identity(self, flow: Flow) -> tuple[Identity, list[wk.StoredKey]]:
        raw_id = flow.internal.get(IDENTITY_KEY)
        if not isinstance(raw_id, str):
            raise FlowInvalid(node_messages={"identifier": [messages.required("identifier")]})
        if raw_id == str(uuid.UUID(int=0)):
            decoy = from_b64url(str(flow.internal.get("webauthn_decoy") or ""))
            placeholder = Identity(schema_id="", traits={}, id=uuid.UUID(int=0))
            return placeholder, [wk.StoredKey(decoy, b"", 0, "", "", True)]
        try:
            identity = await self._identities.get(uuid.UUID(raw_id))
        except errors.NotFound:
            raise FlowInvalid([messages.invalid_credentials()]) from None
        return identity, self._keys(identity, passwordless=True)

    async def _check(self, flow: Flow, identity: Identity, keys: list[wk.StoredKey], raw: Any) -> Identity:
        challenge = await self._challenges.spend(flow, "login")
        try:
            response = parse_response(raw)
            key = next((k for k in keys if k.id == credential_id(response)), None)
            if key is None or not key.public_key:
                raise WebAuthnError("the key is not registered for this identity")
            count = verify_assertion(
                self._rp,
                response,
                challenge,
                public_key=key.public_key,
                sign_count=key.sign_count,
                require_uv=self.first_factor and flow.requested_aal != "aal2",
            )
        except WebAuthnError:
            raise FlowInvalid([messages.invalid_credentials()]) from None
        if identity.state != "active":
            raise FlowInvalid([messages.account_disabled()])
        credential = identity.credentials[KIND]
        return await self._identities.save_credential(identity.id, wk.with_counter(credential, key.id, count))

    # --- registration (passwordless only) ---------------------------------------------------------

    def registration_nodes(self, flow: Flow) -> list[Node]:
        if not self.first_factor:
            return []
        handle = secrets.token_bytes(32)
        flow.internal[HANDLE_KEY] = b64url(handle)
        challenge = self._challenges.issue(flow, "register")
        options = creation_options(
            self._rp, challenge, user_id=handle, user_name="", display_name="", resident_key=True
        )
        out = [
            nodes.input_node(
                "webauthn_register_displayname", KIND, "text", label=messages.webauthn_key_name()
            ),
            wk.hidden("webauthn_register", KIND),
            wk.trigger(
                "webauthn_register_trigger",
                KIND,
                "oryWebAuthnRegistration",
                messages.webauthn_register(),
                wk.options_json(options),
            ),
        ]
        wk.add_script(out, flow, self._base, KIND)
        return out

    async def register(
        self, flow: Flow, body: Mapping[str, Any], client: Client
    ) -> Identity | NotResponsible:
        if not self.first_factor or not wk.claims(body, KIND, "webauthn_register"):
            return NOT_RESPONSIBLE
        with wk.renewed_on_failure(flow, KIND, lambda: self.registration_nodes(flow)):
            return await self._register(flow, body, client)

    async def _register(self, flow: Flow, body: Mapping[str, Any], client: Client) -> Identity:
        schema = self._schemas.get_or_default(flow.identity_schema)
        traits, kept, raw = wk.registration_input(schema, body, "webauthn_register")
        ids = schema.identifiers(traits, KIND)
        identifier = ids[0] if ids else None
        async with counted(self._throttle, ("registration", identifier, client.ip)):
            return await self._create(flow, body, schema, traits, kept, raw, ids)

    async def _create(
        self,
        flow: Flow,
        body: Mapping[str, Any],
        schema: IdentitySchema,
        traits: Mapping[str, Any],
        kept: dict[str, Any],
        raw: Any,
        ids: list[str],
    ) -> Identity:
        handle = from_b64url(str(flow.internal.get(HANDLE_KEY) or ""))
        key = await self._new_keys.verify(flow, "register", raw, require_uv=True)
        name = str(body.get("webauthn_register_displayname") or "")[:64] or "Security key"
        credential = wk.add_key(None, KIND, wk.key_record(key, name, True), tuple(ids), handle)
        return await create_with_credential(self._identities, dict(traits), schema.id, credential, kept)

    # --- settings ---------------------------------------------------------------------------------

    def settings_nodes(self, flow: Flow, identity: Identity) -> list[Node]:
        credential = identity.credentials.get(KIND)
        keys = wk.stored_keys(credential)
        out = [
            nodes.input_node(
                "webauthn_remove",
                KIND,
                "submit",
                value=k.id.hex(),
                label=messages.webauthn_remove_key(k.display_name or "unnamed", k.added_at),
            )
            for k in keys
        ]
        handle = wk.user_handle_of(credential) or identity.id.bytes
        schema = self._schemas.get(identity.schema_id)
        names = schema.identifiers(identity.traits, KIND) or schema.identifiers(identity.traits, "password")
        name = names[0] if names else str(identity.id)
        challenge = self._challenges.issue(flow, "settings")
        options = creation_options(
            self._rp,
            challenge,
            user_id=handle,
            user_name=name,
            display_name=name,
            exclude=[k.id for k in keys],
            resident_key=self.first_factor,
        )
        out += [
            nodes.input_node(
                "webauthn_register_displayname", KIND, "text", label=messages.webauthn_key_name()
            ),
            wk.trigger(
                "webauthn_register_trigger",
                KIND,
                "oryWebAuthnRegistration",
                messages.webauthn_add_key(),
                wk.options_json(options),
            ),
            wk.hidden("webauthn_register", KIND),
        ]
        wk.add_script(out, flow, self._base, KIND)
        return out

    async def update_settings(
        self, flow: Flow, body: Mapping[str, Any], ctx: SettingsContext
    ) -> SettingsUpdate | NotResponsible:
        if not wk.claims(body, KIND, "webauthn_register", "webauthn_remove"):
            return NOT_RESPONSIBLE
        require_privileged(ctx)
        with wk.renewed_on_failure(flow, KIND, lambda: self.settings_nodes(flow, ctx.identity)):
            return await self._update(flow, body, ctx)

    async def _update(self, flow: Flow, body: Mapping[str, Any], ctx: SettingsContext) -> SettingsUpdate:
        identity = ctx.identity
        credential = identity.credentials.get(KIND)
        remove = body.get("webauthn_remove")
        if remove:
            key = _key_by_hex(wk.stored_keys(credential), remove)
            if credential is None or key is None:
                raise FlowInvalid([messages.webauthn_no_keys()])
            if key.is_passwordless and not other_first_factor(identity, KIND, key.id):
                raise wk.refused("You cannot remove the last way to sign in.")
            await ctx.save_hooks(identity)
            return SettingsUpdate(await wk.remove_key(self._identities, identity, KIND, credential, key.id))
        raw = body.get("webauthn_register")
        if not raw:
            raise FlowInvalid(node_messages={"webauthn_register": [messages.required("webauthn_register")]})
        new_key = await self._new_keys.verify(flow, "settings", raw, require_uv=self.first_factor)
        name = str(body.get("webauthn_register_displayname") or "")[:64] or "Security key"
        schema = self._schemas.get(identity.schema_id)
        handle = wk.user_handle_of(credential) or identity.id.bytes
        record = wk.key_record(new_key, name, self.first_factor)
        updated = wk.add_key(
            credential, KIND, record, tuple(schema.identifiers(identity.traits, KIND)), handle
        )
        await ctx.save_hooks(identity)
        try:
            identity = await self._identities.save_credential(identity.id, updated)
        except errors.Conflict:
            raise wk.refused("This security key is registered already.") from None
        return SettingsUpdate(identity, second_factor=None if self.first_factor else KIND)


def _key_by_hex(keys: list[wk.StoredKey], value: Any) -> wk.StoredKey | None:
    try:
        wanted = bytes.fromhex(str(value))
    except ValueError:
        return None
    return next((k for k in keys if k.id == wanted), None)

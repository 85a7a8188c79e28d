"""The ``passkey`` strategy: discoverable credentials (Kratos ``selfservice/strategy/passkey``).

Sign-up and sign-in need no identifier: the login options allow any credential of this relying
party (empty ``allowCredentials``, user verification required), so the browser's passkey UI, or
its autofill with conditional mediation, picks one. The assertion's ``userHandle`` names the
identity: every identity's passkey credential has a random 32-byte user handle, stored as the
identifier (base64url) next to one ``key:<id>`` identifier per passkey.
"""

from __future__ import annotations

import secrets
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
    user_handle,
    verify_assertion,
)
from sidecar.strategies import webauthn_keys as wk
from sidecar.strategies.attempts import counted
from sidecar.strategies.deps import Roles, StrategyDeps
from sidecar.strategies.key_accounts import create_with_credential, other_first_factor
from sidecar.strategies.settings_rules import require_privileged
from sidecar.strategies.traits import flatten

KIND: Final = "passkey"
HANDLE_KEY = "passkey_user_handle"


def display_field(schema: IdentitySchema) -> str | None:
    """The trait that names a new passkey: ``credentials.passkey.display_name``, else an identifier."""
    fields = schema.trait_fields()
    for f in fields:
        passkey = (f.extension.get("credentials") or {}).get("passkey") or {}
        if isinstance(passkey, Mapping) and passkey.get("display_name") is True:
            return f.path
    named = next((f for f in fields if f.identifier_for), None) or next(iter(fields), None)
    return named.path if named else None


class PasskeyStrategy(LoginStrategy, RegistrationStrategy, SettingsStrategy):
    id = KIND

    @classmethod
    def build(cls, deps: StrategyDeps) -> Roles | None:
        if not deps.config.selfservice.methods.passkey.enabled:
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
        self._rp = RelyingParty.from_config(
            config.selfservice.methods.passkey.config.rp, config.public_base_url
        )
        self._base = config.public_base_url
        self._identities = identities
        self._schemas = schemas
        self._throttle = throttle
        self._challenges = wk.Challenges(kv, KIND)
        self._new_keys = wk.NewKeys(self._rp, self._challenges, identities, KIND, "passkey")

    # --- login ----------------------------------------------------------------------------------

    def login_nodes(self, flow: Flow) -> list[Node]:
        challenge = self._challenges.issue(flow, "login")
        options = request_options(self._rp, challenge, user_verification=True)
        identifier = flow.ui.node("identifier")
        button = wk.trigger("passkey_login_trigger", KIND, "oryPasskeyLogin", messages.passkey_login())
        if identifier is not None:
            # The identifier field offers passkeys in the browser's autofill (conditional mediation).
            identifier["attributes"]["autocomplete"] = "username webauthn"
            button["attributes"]["onloadTrigger"] = "oryPasskeyLoginAutocompleteInit"
        out = [
            wk.hidden("passkey_challenge", KIND, wk.options_json(options)),
            wk.hidden("passkey_login", KIND),
            button,
        ]
        wk.add_script(out, flow, self._base, KIND)
        return out

    def identification_nodes(self, flow: Flow) -> list[Node]:
        return self.login_nodes(flow) if flow.type == "browser" else []

    def login_credential_nodes(self, flow: Flow, identity: Identity | None) -> list[Node] | None:
        # Kratos passkey/passkey_login.go: browser flows, an identity with a passkey (or any).
        if flow.type != "browser" or (identity is not None and KIND not in identity.credentials):
            return None
        return self.login_nodes(flow)

    def _renew_login(self, flow: Flow) -> None:
        challenge = self._challenges.issue(flow, "login")
        options = request_options(self._rp, challenge, user_verification=True)
        nodes.set_value(flow.ui.nodes, "passkey_challenge", wk.options_json(options))
        nodes.set_value(flow.ui.nodes, "passkey_login", "")

    async def login(self, flow: Flow, body: Mapping[str, Any], client: Client) -> Identity | NotResponsible:
        if not wk.claims(body, KIND, "passkey_login"):
            return NOT_RESPONSIBLE
        try:
            return await self._login(flow, body, client)
        finally:
            # Whatever happened, the next attempt gets a fresh challenge.
            self._renew_login(flow)

    async def _login(self, flow: Flow, body: Mapping[str, Any], client: Client) -> Identity:
        raw = body.get("passkey_login")
        if not raw:
            raise FlowInvalid(node_messages={"passkey_login": [messages.required("passkey_login")]})
        async with counted(self._throttle, ("login", None, client.ip)):
            return await self._assert(flow, raw)

    async def _assert(self, flow: Flow, raw: Any) -> Identity:
        challenge = await self._challenges.spend(flow, "login")
        try:
            response = parse_response(raw)
            handle = user_handle(response)
            identity = (
                await self._identities.find_by_credential(KIND, b64url(handle))
                if handle is not None
                else None
            )
            credential = identity.credentials.get(KIND) if identity else None
            wanted = credential_id(response)
            key = next((k for k in wk.stored_keys(credential) if k.id == wanted), None)
            if identity is None or credential is None or key is None:
                raise WebAuthnError("unknown passkey")
            count = verify_assertion(
                self._rp,
                response,
                challenge,
                public_key=key.public_key,
                sign_count=key.sign_count,
                require_uv=True,
            )
        except WebAuthnError:
            raise FlowInvalid([messages.invalid_credentials()]) from None
        if identity.state != "active":
            raise FlowInvalid([messages.account_disabled()])
        return await self._identities.save_credential(identity.id, wk.with_counter(credential, key.id, count))

    # --- registration -----------------------------------------------------------------------------

    def _create_data(self, flow: Flow, schema: IdentitySchema) -> str:
        handle = secrets.token_bytes(32)
        flow.internal[HANDLE_KEY] = b64url(handle)
        challenge = self._challenges.issue(flow, "register")
        options = creation_options(
            self._rp, challenge, user_id=handle, user_name="", display_name="", resident_key=True
        )
        field = display_field(schema)
        return wk.options_json(
            {"credentialOptions": options, "displayNameFieldName": f"traits.{field}" if field else ""}
        )

    def registration_nodes(self, flow: Flow) -> list[Node]:
        schema = self._schemas.get_or_default(flow.identity_schema)
        out = [
            wk.hidden("passkey_create_data", KIND, self._create_data(flow, schema)),
            wk.hidden("passkey_register", KIND),
            wk.trigger(
                "passkey_register_trigger", KIND, "oryPasskeyRegistration", messages.passkey_register()
            ),
        ]
        wk.add_script(out, flow, self._base, KIND)
        return out

    async def register(
        self, flow: Flow, body: Mapping[str, Any], client: Client
    ) -> Identity | NotResponsible:
        if not wk.claims(body, KIND, "passkey_register"):
            return NOT_RESPONSIBLE
        with wk.renewed_on_failure(flow, KIND, lambda: self.registration_nodes(flow)):
            return await self._register(flow, body, client)

    async def _register(self, flow: Flow, body: Mapping[str, Any], client: Client) -> Identity:
        schema = self._schemas.get_or_default(flow.identity_schema)
        traits, kept, raw = wk.registration_input(schema, body, "passkey_register")
        ids = [i for f in ("password", "webauthn", "code") for i in schema.identifiers(traits, f)]
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
        field = display_field(schema)
        name = str(kept.get(f"traits.{field}") or "Passkey") if field else "Passkey"
        record = wk.key_record(key, name[:64], True)
        credential = wk.add_key(None, KIND, record, (b64url(handle),), handle)
        return await create_with_credential(self._identities, dict(traits), schema.id, credential, kept)

    # --- settings ---------------------------------------------------------------------------------

    def settings_nodes(self, flow: Flow, identity: Identity) -> list[Node]:
        credential = identity.credentials.get(KIND)
        keys = wk.stored_keys(credential)
        out = [
            nodes.input_node(
                "passkey_remove",
                KIND,
                "submit",
                value=k.id.hex(),
                label=messages.passkey_remove(k.display_name or "unnamed", k.added_at),
            )
            for k in keys
        ]
        handle = wk.user_handle_of(credential) or secrets.token_bytes(32)
        flow.internal[HANDLE_KEY] = b64url(handle)
        schema = self._schemas.get(identity.schema_id)
        field = display_field(schema)
        named = flatten(identity.traits).get(f"traits.{field}") if field else None
        name = str(named or identity.id)
        challenge = self._challenges.issue(flow, "settings")
        options = creation_options(
            self._rp,
            challenge,
            user_id=handle,
            user_name=name,
            display_name=name,
            exclude=[k.id for k in keys],
            resident_key=True,
        )
        out += [
            wk.hidden("passkey_create_data", KIND, wk.options_json(options)),
            wk.hidden("passkey_settings_register", KIND),
            wk.trigger(
                "passkey_create_trigger", KIND, "oryPasskeySettingsRegistration", messages.passkey_add()
            ),
        ]
        wk.add_script(out, flow, self._base, KIND)
        return out

    async def update_settings(
        self, flow: Flow, body: Mapping[str, Any], ctx: SettingsContext
    ) -> SettingsUpdate | NotResponsible:
        if not wk.claims(body, KIND, "passkey_settings_register", "passkey_remove"):
            return NOT_RESPONSIBLE
        require_privileged(ctx)
        with wk.renewed_on_failure(flow, KIND, lambda: self.settings_nodes(flow, ctx.identity)):
            return await self._update(flow, body, ctx)

    async def _update(self, flow: Flow, body: Mapping[str, Any], ctx: SettingsContext) -> SettingsUpdate:
        identity = ctx.identity
        credential = identity.credentials.get(KIND)
        remove = body.get("passkey_remove")
        if remove:
            try:
                wanted = bytes.fromhex(str(remove))
            except ValueError:
                wanted = b""
            key = next((k for k in wk.stored_keys(credential) if k.id == wanted), None)
            if credential is None or key is None:
                raise FlowInvalid([messages.webauthn_no_keys()])
            if not other_first_factor(identity, KIND, key.id):
                raise wk.refused("You cannot remove the last way to sign in.")
            await ctx.save_hooks(identity)
            return SettingsUpdate(await wk.remove_key(self._identities, identity, KIND, credential, key.id))
        raw = body.get("passkey_settings_register")
        if not raw:
            raise FlowInvalid(
                node_messages={"passkey_settings_register": [messages.required("passkey_settings_register")]}
            )
        handle = from_b64url(str(flow.internal.get(HANDLE_KEY) or ""))
        new_key = await self._new_keys.verify(flow, "settings", raw, require_uv=True)
        field = display_field(self._schemas.get(identity.schema_id))
        name = str(flatten(identity.traits).get(f"traits.{field}") or "Passkey") if field else "Passkey"
        record = wk.key_record(new_key, name[:64], True)
        updated = wk.add_key(credential, KIND, record, (b64url(handle),), handle)
        await ctx.save_hooks(identity)
        try:
            identity = await self._identities.save_credential(identity.id, updated)
        except errors.Conflict:
            raise wk.refused("This passkey is registered already.") from None
        return SettingsUpdate(identity)

"""The ``lookup_secret`` strategy: backup recovery codes as second factor.

As Kratos: 12 codes of 8 characters ``[a-z0-9]``, generated in the settings flow, shown until the
user confirms them, then stored as the ``lookup_secret`` credential. Unlike Kratos the codes are
stored only as SHA-256 digests with a per-credential salt, so they are shown exactly once and
``lookup_secret_reveal`` cannot show them again (regenerate instead).

Each code works once. The atomic gate is ``KeyValueStore.add`` on
``lookup-used:{identity}:{digest}``: of concurrent submissions of one code exactly one wins; the
winner then records ``used_at`` on the credential, which is what survives the KV entry's TTL.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
import uuid
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from sidecar import errors
from sidecar.flows import messages, nodes
from sidecar.flows.model import Flow
from sidecar.flows.nodes import Node
from sidecar.flows.outcome import Client, FlowInvalid
from sidecar.flows.strategy import (
    NOT_RESPONSIBLE,
    LoginStrategy,
    NotResponsible,
    SettingsContext,
    SettingsStrategy,
    SettingsUpdate,
)
from sidecar.identity.model import Credential, Identity, utcnow
from sidecar.kv.store import KeyValueStore
from sidecar.security.throttle import Throttle
from sidecar.strategies.attempts import Scope, counted
from sidecar.strategies.deps import Roles, StrategyDeps
from sidecar.strategies.settings_rules import CredentialIdentities, flag, require_privileged

CODE_COUNT = 12
CODE_LENGTH = 8
ALPHABET = string.ascii_lowercase + string.digits
PENDING_KEY = "lookup_secret_codes"
USED_TTL = timedelta(days=366)


def new_codes() -> list[str]:
    return ["".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH)) for _ in range(CODE_COUNT)]


def code_digest(salt: str, code: str) -> str:
    return hashlib.sha256(f"{salt}:{code}".encode()).hexdigest()


def new_credential(codes: list[str]) -> Credential:
    salt = secrets.token_hex(16)
    entries = [{"digest": code_digest(salt, c), "used_at": None} for c in codes]
    return Credential(type="lookup_secret", config={"salt": salt, "recovery_codes": entries})


def _entries(credential: Credential | None) -> list[dict[str, Any]]:
    codes = credential.config.get("recovery_codes") if credential else None
    return [dict(c) for c in codes if isinstance(c, Mapping)] if isinstance(codes, list) else []


def _codes_node(codes: list[str]) -> Node:
    secret_texts = [messages.lookup_secret(c) for c in codes]
    return {
        "type": "text",
        "group": "lookup_secret",
        "attributes": {
            "id": "lookup_secret_codes",
            "text": messages.lookup_codes(codes, secret_texts),
            "node_type": "text",
        },
        "messages": [],
        "meta": {"label": messages.lookup_keep_safe()},
    }


def _button(name: str, label: messages.Text) -> Node:
    return nodes.input_node(name, "lookup_secret", "submit", value=True, label=label)


class LookupSecretStrategy(LoginStrategy, SettingsStrategy):
    id = "lookup_secret"
    first_factor = False
    second_factor = True
    counts_toward_aal = True

    @staticmethod
    def second_factor_ready(identity: Identity) -> bool:
        credential = identity.credentials.get("lookup_secret")
        codes = credential.config.get("recovery_codes") if credential is not None else None
        return isinstance(codes, list) and any(isinstance(c, Mapping) and not c.get("used_at") for c in codes)

    @classmethod
    def build(cls, deps: StrategyDeps) -> Roles | None:
        if not deps.config.selfservice.methods.lookup_secret.enabled:
            return None
        strategy = cls(deps.identities, deps.kv, deps.throttle)
        return Roles(login=strategy, settings=strategy)

    def __init__(self, identities: CredentialIdentities, kv: KeyValueStore, throttle: Throttle) -> None:
        self._identities = identities
        self._kv = kv
        self._throttle = throttle

    # --- login (second factor) ----------------------------------------------------------------

    def login_nodes(self, flow: Flow) -> list[Node]:
        label = messages.lookup_label()
        return [
            nodes.input_node("lookup_secret", "lookup_secret", "text", required=True, label=label),
            nodes.submit_node(
                "lookup_secret",
                "lookup_secret",
                messages.lookup_use(),
            ),
        ]

    async def login(self, flow: Flow, body: Mapping[str, Any], client: Client) -> Identity | NotResponsible:
        if body.get("method") != self.id:
            return NOT_RESPONSIBLE
        if client.session is None:
            raise errors.SessionAAL1Required()
        identity = await self._identities.get(client.session.identity_id)
        credential = identity.credentials.get("lookup_secret")
        salt = credential.config.get("salt") if credential else None
        if credential is None or not isinstance(salt, str):
            raise FlowInvalid([messages.lookup_missing()])
        code = body.get("lookup_secret")
        if not isinstance(code, str) or not code.strip():
            raise FlowInvalid(node_messages={"lookup_secret": [messages.required("lookup_secret")]})
        scopes: tuple[Scope, ...] = (
            ("lookup", str(identity.id), client.ip),
            ("lookup-flow", str(flow.id), None),
        )
        async with counted(self._throttle, *scopes):
            digest = code_digest(salt, code.strip().lower()[:64])
            match = None
            for entry in _entries(credential):
                if hmac.compare_digest(str(entry.get("digest", "")), digest):
                    match = entry
            if match is None:
                raise FlowInvalid(node_messages={"lookup_secret": [messages.lookup_invalid()]})
        used = messages.lookup_used()
        if match.get("used_at"):
            raise FlowInvalid(node_messages={"lookup_secret": [used]})
        now = utcnow().isoformat()
        if not await self._kv.add(f"lookup-used:{identity.id}:{digest}", now.encode(), USED_TTL):
            raise FlowInvalid(node_messages={"lookup_secret": [used]})
        return await self._mark_used(identity.id, salt, digest, now)

    async def _mark_used(self, identity_id: uuid.UUID, salt: str, digest: str, when: str) -> Identity:
        # Re-read right before writing so a code used concurrently is not un-marked by this write.
        identity = await self._identities.get(identity_id)
        credential = identity.credentials.get("lookup_secret")
        if credential is None or credential.config.get("salt") != salt:
            return identity
        entries = [
            {**e, "used_at": when} if e.get("digest") == digest and not e.get("used_at") else e
            for e in _entries(credential)
        ]
        updated = Credential(
            type="lookup_secret",
            identifiers=credential.identifiers,
            config={**credential.config, "recovery_codes": entries},
            version=credential.version,
            id=credential.id,
            created_at=credential.created_at,
        )
        return await self._identities.save_credential(identity_id, updated)

    # --- settings (generate, confirm, disable) -----------------------------------------------

    def settings_nodes(self, flow: Flow, identity: Identity) -> list[Node]:
        pending = flow.internal.get(PENDING_KEY)
        if isinstance(pending, list) and pending:
            confirm = _button("lookup_secret_confirm", messages.lookup_confirm())
            return [_codes_node([str(c) for c in pending]), confirm]
        regenerate = _button("lookup_secret_regenerate", messages.lookup_regenerate())
        if "lookup_secret" not in identity.credentials:
            return [regenerate]
        disable = _button("lookup_secret_disable", messages.lookup_disable())
        return [regenerate, disable]

    async def update_settings(
        self, flow: Flow, body: Mapping[str, Any], ctx: SettingsContext
    ) -> SettingsUpdate | NotResponsible:
        actions = {
            a: flag(body, f"lookup_secret_{a}") for a in ("reveal", "regenerate", "confirm", "disable")
        }
        if not any(actions.values()):
            return NOT_RESPONSIBLE
        require_privileged(ctx)
        identity = ctx.identity
        if actions["confirm"]:
            pending = flow.internal.get(PENDING_KEY)
            if not isinstance(pending, list) or not pending:
                raise FlowInvalid(
                    [
                        messages.generic(
                            "There are no new backup recovery codes to confirm; generate them first."
                        )
                    ]
                )
            await ctx.save_hooks(identity)
            identity = await self._identities.save_credential(
                identity.id, new_credential([str(c) for c in pending])
            )
            flow.internal.pop(PENDING_KEY, None)
            return SettingsUpdate(identity, second_factor="lookup_secret")
        if actions["regenerate"]:
            flow.internal[PENDING_KEY] = new_codes()
            return SettingsUpdate(identity, done=False)
        if actions["disable"]:
            if "lookup_secret" not in identity.credentials:
                raise FlowInvalid([messages.lookup_missing()])
            flow.internal.pop(PENDING_KEY, None)
            await ctx.save_hooks(identity)
            return SettingsUpdate(await self._identities.remove_credential(identity.id, "lookup_secret"))
        raise FlowInvalid(
            [
                messages.generic(
                    "Backup recovery codes are stored hashed and cannot be shown again; generate a new set."
                )
            ]
        )

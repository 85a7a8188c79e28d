"""What the ``webauthn`` and ``passkey`` strategies share: stored keys, challenges, UI nodes, texts.

A credential's ``config`` is Kratos' ``identity.CredentialsWebAuthnConfig``:
``{"credentials": [{"id", "public_key", "attestation_type", "authenticator": {"aaguid",
"sign_count", "clone_warning"}, "display_name", "added_at", "is_passwordless"}], "user_handle"}``.
Besides the trait identifiers, every key's id is stored as an identifier ``key:<base64url id>``, so
the database's unique ``(type, identifier)`` constraint makes a credential id belong to one
identity only, even under racing registrations.

A challenge lives in the flow's internal context (never sent back except inside the options) and is
spent with an atomic ``KeyValueStore.add`` before a response is checked: a replayed or concurrently
submitted response finds it spent.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import json
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from importlib import resources
from typing import Any, Protocol

from sidecar.flows import messages, nodes
from sidecar.flows.messages import Text
from sidecar.flows.model import Flow
from sidecar.flows.nodes import Group, Node
from sidecar.flows.outcome import FlowInvalid
from sidecar.identity.manager import IdentitySpec
from sidecar.identity.model import Credential, Identity, utcnow
from sidecar.kv.store import KeyValueStore
from sidecar.schema.model import IdentitySchema
from sidecar.security import tokens
from sidecar.security.webauthn_rp import (
    NewKey,
    RelyingParty,
    WebAuthnError,
    b64std,
    b64url,
    from_b64std,
    from_b64url,
    new_challenge,
    parse_response,
    verify_creation,
)
from sidecar.strategies.traits import flatten, validation_messages

KEY_PREFIX = "key:"
SCRIPT_PATH = "/.well-known/ory/webauthn.js"
SPENT_TTL = timedelta(hours=2)


class KeyIdentities(Protocol):
    """The part of ``IdentityManager`` the key strategies use."""

    async def get(self, identity_id: uuid.UUID) -> Identity: ...

    async def create(self, spec: IdentitySpec) -> Identity: ...

    async def delete(self, identity_id: uuid.UUID) -> None: ...

    async def find_by_credential(self, credential_type: str, identifier: str) -> Identity | None: ...

    async def save_credential(self, identity_id: uuid.UUID, credential: Credential) -> Identity: ...

    async def remove_credential(self, identity_id: uuid.UUID, credential_type: str) -> Identity: ...


def refused(reason: str) -> FlowInvalid:
    return FlowInvalid([messages.generic(reason)])


def claims(body: Mapping[str, Any], kind: str, *fields: str) -> bool:
    """``method=<kind>``, or no method but one of the fields (a form sent by ``webauthn.js``)."""
    method = body.get("method")
    return method == kind or (not method and any(body.get(f) for f in fields))


def registration_input(
    schema: IdentitySchema, body: Mapping[str, Any], field: str
) -> tuple[Mapping[str, Any], dict[str, Any], Any]:
    """The traits, their flattened form values and the ``field`` response of a registration
    submission; FlowInvalid with every problem at once when any is missing or invalid."""
    traits = body.get("traits")
    kept = flatten(traits)
    problems = validation_messages(schema, traits)
    raw = body.get(field)
    if not raw:
        problems.setdefault(field, []).append(messages.required(field))
    if problems or not isinstance(traits, Mapping):
        raise FlowInvalid(node_messages=problems, values=kept)
    return traits, kept, raw


@dataclass(frozen=True, slots=True)
class NewKeys:
    """Checks a creation response: its challenge is spent, it verifies, and no identity holds the
    key yet. ``noun`` names the key in messages ("passkey", "security key")."""

    rp: RelyingParty
    challenges: Challenges
    identities: KeyIdentities
    kind: str
    noun: str

    async def verify(self, flow: Flow, purpose: str, raw: Any, *, require_uv: bool) -> NewKey:
        challenge = await self.challenges.spend(flow, purpose)
        try:
            key = verify_creation(self.rp, parse_response(raw), challenge, require_uv=require_uv)
        except WebAuthnError as exc:
            raise refused(f"The {self.noun} could not be registered: {exc}") from None
        if await self.identities.find_by_credential(self.kind, key_identifier(key.id)) is not None:
            raise refused(f"This {self.noun} is registered already.")
        return key


async def remove_key(
    identities: KeyIdentities, identity: Identity, kind: str, credential: Credential, key_id: bytes
) -> Identity:
    """``identity`` without the key ``key_id``; the whole credential goes with its last key."""
    left = drop_key(credential, key_id)
    if left is None:
        return await identities.remove_credential(identity.id, kind)
    return await identities.save_credential(identity.id, left)


# --- stored keys --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoredKey:
    id: bytes
    public_key: bytes
    sign_count: int
    display_name: str
    added_at: str
    is_passwordless: bool

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> StoredKey | None:
        try:
            auth = raw.get("authenticator") or {}
            return cls(
                id=from_b64std(str(raw["id"])),
                public_key=from_b64std(str(raw["public_key"])),
                sign_count=int(auth.get("sign_count") or 0),
                display_name=str(raw.get("display_name") or ""),
                added_at=str(raw.get("added_at") or ""),
                is_passwordless=bool(raw.get("is_passwordless")),
            )
        except (KeyError, ValueError, TypeError):
            return None


def stored_keys(credential: Credential | None) -> list[StoredKey]:
    raw = credential.config.get("credentials") if credential else None
    found = [StoredKey.parse(k) for k in raw if isinstance(k, Mapping)] if isinstance(raw, list) else []
    return [k for k in found if k is not None]


def key_record(key: NewKey, display_name: str, passwordless: bool) -> dict[str, Any]:
    return {
        "id": b64std(key.id),
        "public_key": b64std(key.public_key),
        "attestation_type": key.attestation_type,
        "authenticator": {"aaguid": b64std(key.aaguid), "sign_count": key.sign_count, "clone_warning": False},
        "display_name": display_name,
        "added_at": utcnow().isoformat().replace("+00:00", "Z"),
        "is_passwordless": passwordless,
    }


def key_identifier(key_id: bytes) -> str:
    return KEY_PREFIX + b64url(key_id)


def _with_identifiers(credential: Credential, base: tuple[str, ...]) -> Credential:
    keys = stored_keys(credential)
    ids = tuple(dict.fromkeys([*base, *(key_identifier(k.id) for k in keys)]))
    return replace(credential, identifiers=ids, updated_at=utcnow())


def add_key(
    existing: Credential | None, kind: str, record: dict[str, Any], base_ids: tuple[str, ...], handle: bytes
) -> Credential:
    if existing is None:
        config: dict[str, Any] = {"credentials": [record], "user_handle": b64std(handle)}
        return _with_identifiers(Credential(type=kind, config=config, version=1), base_ids)
    old = [k for k in existing.config.get("credentials") or [] if isinstance(k, Mapping)]
    config = {**existing.config, "credentials": [*old, record]}
    config.setdefault("user_handle", b64std(handle))
    kept = tuple(i for i in existing.identifiers if not i.startswith(KEY_PREFIX))
    return _with_identifiers(replace(existing, config=config), base_ids or kept)


def drop_key(existing: Credential, key_id: bytes) -> Credential | None:
    """The credential without ``key_id``; None when no key is left."""
    left = [
        k
        for k in existing.config.get("credentials") or []
        if isinstance(k, Mapping) and k.get("id") != b64std(key_id)
    ]
    if not left:
        return None
    kept = tuple(i for i in existing.identifiers if not i.startswith(KEY_PREFIX))
    return _with_identifiers(replace(existing, config={**existing.config, "credentials": left}), kept)


def with_counter(existing: Credential, key_id: bytes, count: int) -> Credential:
    updated = []
    for k in existing.config.get("credentials") or []:
        if isinstance(k, Mapping) and k.get("id") == b64std(key_id):
            auth = {**(k.get("authenticator") or {}), "sign_count": count}
            k = {**k, "authenticator": auth}
        updated.append(k)
    return replace(existing, config={**existing.config, "credentials": updated}, updated_at=utcnow())


def user_handle_of(credential: Credential | None) -> bytes | None:
    raw = credential.config.get("user_handle") if credential else None
    try:
        return from_b64std(raw) if isinstance(raw, str) and raw else None
    except ValueError:
        return None


# --- challenges ---------------------------------------------------------------------------------


class Challenges:
    """One challenge per flow and purpose, kept in ``flow.internal`` and spent once."""

    def __init__(self, kv: KeyValueStore, prefix: str) -> None:
        self._kv = kv
        self._prefix = prefix

    def issue(self, flow: Flow, purpose: str) -> bytes:
        challenge = new_challenge()
        flow.internal[f"{self._prefix}_{purpose}_challenge"] = b64url(challenge)
        return challenge

    def current(self, flow: Flow, purpose: str) -> str | None:
        value = flow.internal.get(f"{self._prefix}_{purpose}_challenge")
        return value if isinstance(value, str) else None

    async def spend(self, flow: Flow, purpose: str) -> bytes:
        """The flow's challenge, now spent; FlowInvalid when there is none or it was used already."""
        value = flow.internal.pop(f"{self._prefix}_{purpose}_challenge", None)
        if not isinstance(value, str) or not value:
            raise refused("The WebAuthn challenge is missing or was used already; please try again.")
        fresh = await self._kv.add(f"webauthn-spent:{tokens.digest(value)}", b"1", SPENT_TTL)
        if not fresh:
            raise refused("The WebAuthn challenge was used already; please try again.")
        return from_b64url(value)


# --- nodes --------------------------------------------------------------------------------------


@functools.cache
def _script_integrity() -> str:
    script = resources.files("sidecar.ui").joinpath("static", "webauthn.js").read_bytes()
    digest = hashlib.sha512(script).digest()
    return "sha512-" + base64.b64encode(digest).decode("ascii")


def script_node(public_base_url: str, group: Group) -> Node:
    return {
        "type": "script",
        "group": group,
        "attributes": {
            "src": public_base_url + SCRIPT_PATH,
            "async": True,
            "referrerpolicy": "no-referrer",
            "crossorigin": "anonymous",
            "integrity": _script_integrity(),
            "type": "text/javascript",
            "id": "webauthn_script",
            "nonce": "",
            "node_type": "script",
        },
        "messages": [],
        "meta": {},
    }


def add_script(out: list[Node], flow: Flow, public_base_url: str, group: Group) -> None:
    """One ``webauthn_script`` node per flow, whichever of webauthn / passkey adds it first."""
    present = [*flow.ui.nodes, *out]
    if not any(n["attributes"].get("id") == "webauthn_script" for n in present):
        out.append(script_node(public_base_url, group))


def trigger(name: str, group: Group, helper: str, label: Text, value: str = "") -> Node:
    node = nodes.input_node(name, group, "button", value=value, label=label)
    node["attributes"]["onclickTrigger"] = helper
    return node


def hidden(name: str, group: Group, value: str = "") -> Node:
    return nodes.input_node(name, group, "hidden", value=value)


def options_json(options: Mapping[str, Any]) -> str:
    return json.dumps(options, separators=(",", ":"))


@contextlib.contextmanager
def renewed_on_failure(flow: Flow, group: str, fresh: Callable[[], list[Node]]) -> Iterator[None]:
    """A rejected ceremony (``FlowInvalid``) leaves ``group``'s nodes rebuilt by ``fresh``: its
    challenge was spent, so the next attempt needs a new one."""
    try:
        yield
    except FlowInvalid:
        replace_nodes(flow, group, fresh())
        raise


def replace_nodes(flow: Flow, group: str, new: list[Node]) -> None:
    """Swap ``group``'s nodes; the one script node stays (or comes in with ``new``)."""

    def is_script(n: Node) -> bool:
        return n["attributes"].get("id") == "webauthn_script"

    flow.ui.nodes = [n for n in flow.ui.nodes if n["group"] != group or is_script(n)]
    has_script = any(is_script(n) for n in flow.ui.nodes)
    flow.ui.nodes.extend(n for n in new if not (has_script and is_script(n)))

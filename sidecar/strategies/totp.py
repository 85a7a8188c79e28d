"""The ``totp`` strategy: an authenticator app as second factor (RFC 6238, via pyotp).

Enrolment happens in the settings flow: a fresh secret waits in the flow's internal context and
is shown as an ``otpauth://`` QR code (a PNG data URI, drawn here, never by a third party) and as
text; a correct ``totp_code`` stores it as the ``totp`` credential (``config.totp_url``, as Kratos).

A code counts once: the RFC 6238 time step it matched is consumed with an atomic
``KeyValueStore.add`` on ``totp-step:{identity}:{step}``, so a replay, or ten concurrent
submissions of one code, succeed at most once. ``skew_steps`` steps either side of now are
accepted (RFC 6238 §5.2). Submissions are counted per identity and per flow by the rate limiter
before any code is compared.
"""

from __future__ import annotations

import base64
import hmac
import io
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import pyotp

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
    SettingsContext,
    SettingsStrategy,
    SettingsUpdate,
)
from sidecar.identity.model import Credential, Identity
from sidecar.kv.store import KeyValueStore
from sidecar.schema.registry import SchemaRegistry
from sidecar.security.throttle import Throttle
from sidecar.strategies.attempts import Scope, counted
from sidecar.strategies.deps import Roles, StrategyDeps
from sidecar.strategies.settings_rules import CredentialIdentities, flag, require_privileged

PENDING_KEY = "totp_url"
QR_SIZE = 256


def matching_step(secret: str, code: str, now: float, skew: int) -> int | None:
    """The time step within ``now ± skew`` steps whose code equals ``code`` (every candidate is
    compared, in constant time, so timing says nothing about which one matched)."""
    totp = pyotp.TOTP(secret)
    current = int(now // totp.interval)
    found: int | None = None
    for step in range(current - skew, current + skew + 1):
        if hmac.compare_digest(totp.generate_otp(step), code) and found is None:
            found = step
    return found


def qr_data_uri(text: str) -> str:
    # qrcode (~15 ms of imports) loads with the enabled method (TotpStrategy), not at every start.
    import qrcode

    image = qrcode.make(text, box_size=8, border=2)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def secret_of(totp_url: str) -> str:
    return str(pyotp.parse_uri(totp_url).secret)


def _code_node(label: messages.Text) -> Node:
    return nodes.input_node(
        "totp_code", "totp", "text", required=True, autocomplete="one-time-code", label=label
    )


class TotpStrategy(LoginStrategy, SettingsStrategy):
    id = "totp"
    first_factor = False
    second_factor = True
    counts_toward_aal = True

    @staticmethod
    def second_factor_ready(identity: Identity) -> bool:
        credential = identity.credentials.get("totp")
        return credential is not None and bool(credential.config.get("totp_url"))

    @classmethod
    def build(cls, deps: StrategyDeps) -> Roles | None:
        if not deps.config.selfservice.methods.totp.enabled:
            return None
        strategy = cls(deps.config, deps.identities, deps.schemas, deps.kv, deps.throttle)
        return Roles(login=strategy, settings=strategy)

    def __init__(
        self,
        config: Config,
        identities: CredentialIdentities,
        schemas: SchemaRegistry,
        kv: KeyValueStore,
        throttle: Throttle,
        clock: Callable[[], float] = time.time,
    ) -> None:
        import qrcode  # noqa: F401  (loaded, or missing, at start: see qr_data_uri)

        totp = config.selfservice.methods.totp.config
        self._issuer = totp.issuer or urlsplit(config.public_base_url).hostname or "sidecar"
        self._skew = totp.skew_steps
        self._identities = identities
        self._schemas = schemas
        self._kv = kv
        self._throttle = throttle
        self._clock = clock

    # --- checking a code --------------------------------------------------------------------

    async def _verify(
        self, flow: Flow, identity_id: uuid.UUID, secret: str, code: Any, ip: str | None
    ) -> None:
        if not isinstance(code, str) or not code.strip():
            raise FlowInvalid(node_messages={"totp_code": [messages.required("totp_code")]})
        # Guesses per identity (and IP), and per flow (``sidecar.security.throttle``).
        scopes: tuple[Scope, ...] = (("totp", str(identity_id), ip), ("totp-flow", str(flow.id), None))
        async with counted(self._throttle, *scopes):
            code = code.strip()
            step = None
            if len(code) == 6 and code.isascii() and code.isdigit():
                step = matching_step(secret, code, self._clock(), self._skew)
            # The step is consumed atomically: of concurrent submissions of one code, one wins.
            ttl = timedelta(seconds=30 * (2 * self._skew + 2))
            if step is None or not await self._kv.add(f"totp-step:{identity_id}:{step}", b"1", ttl):
                raise FlowInvalid(node_messages={"totp_code": [messages.totp_invalid()]})

    # --- login (second factor) ----------------------------------------------------------------

    def login_nodes(self, flow: Flow) -> list[Node]:
        return [
            _code_node(messages.totp_code_label()),
            nodes.submit_node("totp", "totp", messages.totp_use()),
        ]

    async def login(self, flow: Flow, body: Mapping[str, Any], client: Client) -> Identity | NotResponsible:
        if body.get("method") != self.id:
            return NOT_RESPONSIBLE
        if client.session is None:
            raise errors.SessionAAL1Required()
        identity = await self._identities.get(client.session.identity_id)
        credential = identity.credentials.get("totp")
        url = credential.config.get("totp_url") if credential else None
        if not isinstance(url, str) or not url:
            raise FlowInvalid([messages.totp_missing()])
        await self._verify(flow, identity.id, secret_of(url), body.get("totp_code"), client.ip)
        return identity

    # --- settings (enrol, unlink) --------------------------------------------------------------

    def _new_url(self, identity: Identity) -> str:
        schema = self._schemas.get(identity.schema_id)
        account = schema.totp_account_name(identity.traits) or str(identity.id)
        return pyotp.TOTP(pyotp.random_base32()).provisioning_uri(name=account, issuer_name=self._issuer)

    def settings_nodes(self, flow: Flow, identity: Identity) -> list[Node]:
        if "totp" in identity.credentials:
            unlink = nodes.input_node(
                "totp_unlink",
                "totp",
                "submit",
                value=True,
                label=messages.totp_unlink(),
            )
            return [unlink]
        url = flow.internal.get(PENDING_KEY)
        if not isinstance(url, str):
            url = flow.internal[PENDING_KEY] = self._new_url(identity)
        secret = secret_of(url)
        qr: Node = {
            "type": "img",
            "group": "totp",
            "attributes": {
                "id": "totp_qr",
                "src": qr_data_uri(url),
                "width": QR_SIZE,
                "height": QR_SIZE,
                "node_type": "img",
            },
            "messages": [],
            "meta": {"label": messages.totp_qr()},
        }
        secret_node: Node = {
            "type": "text",
            "group": "totp",
            "attributes": {
                "id": "totp_secret_key",
                "text": messages.totp_secret(secret),
                "node_type": "text",
            },
            "messages": [],
            "meta": {"label": messages.totp_secret_label()},
        }
        code = _code_node(messages.label_verify_code())
        return [qr, secret_node, code, nodes.submit_node("totp", "totp", messages.label_save())]

    async def update_settings(
        self, flow: Flow, body: Mapping[str, Any], ctx: SettingsContext
    ) -> SettingsUpdate | NotResponsible:
        unlink = flag(body, "totp_unlink")
        if body.get("method") != self.id and not unlink:
            return NOT_RESPONSIBLE
        require_privileged(ctx)
        identity = ctx.identity
        if unlink:
            if "totp" not in identity.credentials:
                raise FlowInvalid([messages.totp_missing()])
            await ctx.save_hooks(identity)
            identity = await self._identities.remove_credential(identity.id, "totp")
            flow.internal.pop(PENDING_KEY, None)
            return SettingsUpdate(identity)
        if "totp" in identity.credentials:
            raise FlowInvalid([messages.generic("An authenticator app is already linked; unlink it first.")])
        url = flow.internal.get(PENDING_KEY)
        if not isinstance(url, str):
            raise FlowInvalid(node_messages={"totp_code": [messages.totp_invalid()]})
        await self._verify(flow, identity.id, secret_of(url), body.get("totp_code"), ctx.client.ip)
        credential = Credential(type="totp", identifiers=(str(identity.id),), config={"totp_url": url})
        await ctx.save_hooks(identity)
        identity = await self._identities.save_credential(identity.id, credential)
        flow.internal.pop(PENDING_KEY, None)
        return SettingsUpdate(identity, second_factor="totp")

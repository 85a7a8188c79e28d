"""Kratos ``web_hook`` hooks around the flows (``selfservice/hook/web_hook.go``).

``before`` hooks run when a flow is created; ``after`` hooks when it succeeds. As in Kratos, an
after hook with ``response.parse`` or ``can_interrupt`` runs before the result is final (for a
registration: before the identity is kept; it may change it or stop the flow with messages on its
fields), the others once it is final. ``response.ignore`` hooks are fire and forget: they go to
the ``Dispatcher`` (the durable outbox) and the flow never waits for them.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from sidecar.config.model import Config, FlowConfig, Hook
from sidecar.config.webhook import WebHookConfig
from sidecar.flows.messages import Text
from sidecar.flows.model import Flow, flow_to_json
from sidecar.flows.outcome import Client, FlowInvalid
from sidecar.identity.identity_json import identity_to_json
from sidecar.identity.manager import IdentityManager, IdentitySpec
from sidecar.identity.model import Identity
from sidecar.session.model import Session
from sidecar.session.session_json import session_to_json
from sidecar.webhooks.runner import PreparedCall, WebHookInterrupted, WebHookRunner

log = logging.getLogger("sidecar.webhooks")


UpdateIdentity = Callable[[Identity, dict[str, Any]], Awaitable[Identity]]
"""Saves a ``response.parse`` hook's changes to a just-registered identity."""


def identity_updater(identities: IdentityManager) -> UpdateIdentity:
    async def update(identity: Identity, patch: dict[str, Any]) -> Identity:
        spec = IdentitySpec(
            traits=patch.get("traits", identity.traits),
            schema_id=patch.get("schema_id", identity.schema_id),
            state=patch.get("state", identity.state),
            metadata_public=patch.get("metadata_public", identity.metadata_public),
            metadata_admin=patch.get("metadata_admin", identity.metadata_admin),
            external_id=patch.get("external_id", identity.external_id),
            organization_id=identity.organization_id,
        )
        return await identities.update(identity.id, spec)

    return update


def apply_patch(identity: Identity, patch: Mapping[str, Any]) -> Identity:
    """``identity`` with a ``response.parse`` answer's traits and metadata, not yet saved."""
    return replace(
        identity,
        traits=patch.get("traits", identity.traits),
        metadata_public=patch.get("metadata_public", identity.metadata_public),
        metadata_admin=patch.get("metadata_admin", identity.metadata_admin),
        external_id=patch.get("external_id", identity.external_id),
    )


class Dispatcher(Protocol):
    """Where fire-and-forget calls go (``response.ignore``)."""

    async def dispatch(self, call: PreparedCall, *, flow_id: str) -> None: ...


def web_hooks(hooks: list[Hook]) -> list[WebHookConfig]:
    return [WebHookConfig.model_validate(h.config) for h in hooks if h.hook == "web_hook"]


def interrupted(exc: WebHookInterrupted) -> FlowInvalid:
    """Kratos' hook validation errors: ``#/traits/email`` lands on the ``traits.email`` node,
    ``#/`` (or anything not a field) on the flow."""
    general: list[Text] = []
    on_nodes: dict[str, list[Text]] = {}
    for found in exc.found:
        pointer = found.instance_ptr.lstrip("#").strip("/")
        texts: list[Text] = [dict(m) for m in found.messages]  # type: ignore[misc]
        if pointer:
            on_nodes.setdefault(pointer.replace("/", "."), []).extend(texts)
        else:
            general.extend(texts)
    return FlowInvalid(general, node_messages=on_nodes)


@dataclass(frozen=True, slots=True)
class WebHookServices:
    """What every flow's web hooks share: the caller and the outbox."""

    runner: WebHookRunner
    dispatcher: Dispatcher | None = None


class FlowWebHooks:
    """The web hooks of one flow kind, given what they need to build Kratos' ``ctx``."""

    def __init__(
        self,
        config: Config,
        flow_config: FlowConfig,
        runner: WebHookRunner | None,
        dispatcher: Dispatcher | None,
    ) -> None:
        self._schema_url = config.public_base_url + "/schemas"
        self._flow_config = flow_config
        self._runner = runner
        self._dispatcher = dispatcher

    def _ctx(
        self, flow: Flow, client: Client, identity: Identity | None, session: Session | None
    ) -> dict[str, Any]:
        assert self._runner is not None
        identity_json = (
            identity_to_json(identity, schema_url=self._schema_url, admin=True)
            if identity is not None
            else None
        )
        request = client.request
        return self._runner.context(
            flow_to_json(flow),
            {
                "method": request.method,
                "url": request.url,
                "headers": request.headers,
                "cookies": dict(request.cookies),
            }
            if request is not None
            else None,
            identity=identity_json,
            session=session_to_json(session, identity_json) if session is not None else None,
        )

    async def before(self, flow: Flow, client: Client) -> None:
        await self._run(web_hooks(self._flow_config.before.hooks), flow, client, None, None)

    async def after(
        self,
        flow: Flow,
        method: str,
        client: Client,
        *,
        identity: Identity | None,
        session: Session | None = None,
        interrupting: bool | None = None,
    ) -> dict[str, Any] | None:
        """Run the after hooks (``interrupting``: only those that may stop the flow, or only the
        others; None: all). Returns the merged identity changes of ``parse`` hooks."""
        hooks = web_hooks(self._flow_config.after.for_method(method))
        if interrupting is not None:
            hooks = [h for h in hooks if h.interrupts == interrupting]
        return await self._run(hooks, flow, client, identity, session)

    async def _run(
        self,
        hooks: list[WebHookConfig],
        flow: Flow,
        client: Client,
        identity: Identity | None,
        session: Session | None,
    ) -> dict[str, Any] | None:
        if not hooks or self._runner is None:
            return None
        ctx = self._ctx(flow, client, identity, session)
        patch: dict[str, Any] = {}
        for hook in hooks:
            if hook.response.ignore:
                prepared = await self._runner.prepare(hook, ctx)
                if prepared is not None and self._dispatcher is not None:
                    await self._dispatcher.dispatch(prepared, flow_id=str(flow.id))
                continue
            try:
                result = await self._runner.call(hook, ctx)
            except WebHookInterrupted as exc:
                raise interrupted(exc) from None
            if result.identity_patch:
                patch.update(result.identity_patch)
                if isinstance(ctx.get("identity"), Mapping):
                    ctx["identity"] = {**ctx["identity"], **result.identity_patch}
        return patch or None

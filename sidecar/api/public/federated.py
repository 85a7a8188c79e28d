"""The answer to a browser coming back from an identity provider (OIDC callback, SAML ACS):
always a 303, to the flow's UI, to ``return_to`` with a session cookie, or onwards."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import Response

from sidecar import errors
from sidecar.api.public.flow_http import HttpContext, see_other
from sidecar.flows.lifecycle import FlowLifecycle
from sidecar.flows.model import FlowKind
from sidecar.flows.outcome import AlreadySignedIn, Completed, FlowReplaced, Outcome, ShowFlow


def came_back(
    ctx: HttpContext, lifecycles: Mapping[str, FlowLifecycle], kind: FlowKind, outcome: Outcome
) -> Response:
    life = lifecycles[kind]
    if isinstance(outcome, FlowReplaced | ShowFlow):
        return see_other(life.ui_redirect(outcome.flow))
    if isinstance(outcome, AlreadySignedIn):
        return see_other(outcome.redirect_to)
    if not isinstance(outcome, Completed):
        raise errors.InternalError(f"unexpected outcome of a provider callback: {type(outcome).__name__}")
    response = see_other(outcome.redirect_to)
    if outcome.session is not None and outcome.token is not None:
        ctx.set_session_cookie(response, outcome.token, outcome.session)
    return response

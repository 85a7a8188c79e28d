"""``/self-service/verification/*`` (kratos-api.md §1.4)."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import Response
from starlette.routing import Route

from sidecar import errors
from sidecar.api.public.challenge_routes import challenge_routes
from sidecar.api.public.errors_flow import ErrorFlows
from sidecar.api.public.flow_http import HttpContext
from sidecar.flows.model import FlowType
from sidecar.flows.outcome import AlreadySignedIn, Client, Completed, ShowFlow
from sidecar.flows.verification import VerificationFlows


def verification_routes(
    ctx: HttpContext, flows: VerificationFlows, error_flows: ErrorFlows, max_body: int
) -> list[Route]:
    async def init(
        flow_type: FlowType, client: Client, request_url: str, query: Mapping[str, str]
    ) -> ShowFlow | AlreadySignedIn:
        return await flows.init(flow_type, client, request_url=request_url, return_to=query.get("return_to"))

    def complete(done: Completed, json_req: bool) -> Response:
        # Verification passes with a ShowFlow (it never signs anyone in).
        raise errors.InternalError("verification does not complete with a session")

    return challenge_routes(ctx, flows, init, complete, error_flows, max_body)

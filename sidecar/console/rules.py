"""The access rules in the order they are tried, with how often each decided a request, and the
"explain" form: method + URL + identity → which rule matched, why the others did not, and the
decision. The walk is ``sidecar.proxy.explain`` (``sidecar rules explain`` prints the same), over
the rules the proxy has loaded now.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from sidecar.console.auth import ConsoleSession
from sidecar.console.pages import Pages, Problem
from sidecar.i18n import N_, Phrase
from sidecar.identity.store import IdentityStore
from sidecar.metrics import Metrics
from sidecar.proxy.explain import Explanation, describe, explain_request, reason_phrase
from sidecar.rules.decision import Verdict
from sidecar.rules.holder import RulesHolder
from sidecar.session.model import Session
from sidecar.session.resolver import ResolvedSession, resolved

MAX_URL = 2048
# What an explanation ends with, in words (the same as ``sidecar rules explain`` prints in English).
_OUTCOMES = {
    Verdict.ALLOW: N_("allow"),
    Verdict.LOGIN: N_("login required (browser: redirect to login; API: 401 session_inactive)"),
    Verdict.STEP_UP: N_("step-up required (browser: login with aal=aal2; API: 403 session_aal2_required)"),
    Verdict.FORBIDDEN: N_("forbidden (403)"),
    Verdict.UNAVAILABLE: N_("session store unavailable (503)"),
}
_DEFAULT_DENY = N_("forbidden (403, default deny)")
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


class RulesPages:
    def __init__(
        self,
        pages: Pages,
        rules: RulesHolder,
        metrics: Metrics,
        identities: IdentityStore,
        required_aal: str,
    ) -> None:
        self.pages = pages
        self.rules = rules
        self.metrics = metrics
        self.identities = identities
        self.required_aal = required_aal

    async def _session(self, raw: str, aal: str) -> tuple[ResolvedSession | None, str | Phrase]:
        """The identity's session for the explanation (signed in now at ``aal``), or a problem."""
        if not raw:
            return None, ""
        try:
            identity_id = uuid.UUID(raw)
        except ValueError:
            return None, Phrase(N_("The identity must be given by its id (a UUID)."))
        identity = await self.identities.get(identity_id)
        if identity is None:
            return None, Phrase(N_("There is no identity with that id."))
        session = Session(identity_id=identity.id, expires_at=datetime.now(UTC) + timedelta(hours=1), aal=aal)
        return resolved(session, identity), ""

    async def show(self, request: Request, signed_in: ConsoleSession) -> Response:
        q = request.query_params
        current = self.rules.current
        counts = await self.metrics.rule_matches()
        rules = [
            {
                "id": r.id,
                "source": r.source,
                "methods": sorted(r.methods) if r.methods is not None else [Phrase(N_("any method"))],
                "hosts": sorted(r.hosts or ()) + [f"*{s}" for s in r.host_suffixes]
                or [Phrase(N_("any host"))],
                "paths": list(r.path_patterns),
                "requires": describe(r),
                "matches": counts.get(r.id, 0),
            }
            for r in current.rules
        ]
        method = (q.get("method") or "GET").upper()[:16]
        url = (q.get("url") or "").strip()[:MAX_URL]
        identity = (q.get("identity") or "").strip()[:64]
        aal = "aal2" if q.get("aal") == "aal2" else "aal1"
        explanation: Explanation | None = None
        problem: str | Phrase = ""
        status = 200
        if url:
            if method not in _METHODS:
                raise Problem(
                    400, Phrase(N_("The method must be one of {methods}."), methods=", ".join(_METHODS))
                )
            session, problem = await self._session(identity, aal)
            if not problem:
                explanation = explain_request(current, method, url, session, self.required_aal)
                verdict = explanation.verdict
                self.pages.audit.record(
                    signed_in.actor,
                    "rules.explain",
                    identity_id=session.identity_id if session else None,
                    detail=f"{method} {url} -> {verdict.name.lower() if verdict else explanation.problem}",
                )
            else:
                status = 400
        context: dict[str, Any] = {
            "title": Phrase(N_("Access rules")),
            "rules": rules,
            "order": current.order,
            "files": list(current.files),
            "method": method,
            "methods": _METHODS,
            "url": url,
            "identity": identity,
            "aal": aal,
            "problem": problem,
            "explanation": explanation,
            "allowed": explanation is not None and explanation.verdict is Verdict.ALLOW,
            "requires": describe(explanation.matched) if explanation and explanation.matched else "",
            "outcome_text": _outcome(explanation),
            "reason": reason_phrase(explanation.outcome.reason)
            if explanation and explanation.outcome and explanation.outcome.reason
            else "",
            "explain_problem": _problem(explanation),
        }
        return self.pages.render("rules.html", context, signed_in=signed_in, section="rules", status=status)


def _problem(explanation: Explanation | None) -> Phrase | None:
    """Why a request never reached the rules, in words (``explain_request`` says it in English)."""
    if explanation is None or not explanation.problem:
        return None
    if explanation.problem_status == 400:
        detail = explanation.problem.partition("malformed: ")[2]
        return Phrase(N_("400: the path is ambiguous or malformed: {detail}"), detail=detail)
    return Phrase(N_("not an absolute URL: {url}"), url=explanation.url)


def _outcome(explanation: Explanation | None) -> Phrase:
    if explanation is None or explanation.outcome is None:
        return Phrase("")
    if explanation.matched is None:
        return Phrase(_DEFAULT_DENY)
    return Phrase(_OUTCOMES[explanation.outcome.verdict])

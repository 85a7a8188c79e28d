"""Organization pages: list, create, edit (label, slug, domains), delete with confirmation, the
members (identities whose ``organization_id`` is the organization) and the SCIM bearer token.

Writes go through ``OrganizationManager``, the admin API's rules, so the console stores nothing the
API would refuse. Single sign-on connections are configuration (an OIDC provider's or a SAML
connection's ``organization_id``), so they are shown here, not edited. A SCIM token is shown once,
in the answer to the POST that issued it (``Cache-Control: no-store``); afterwards only when it was
issued. The issuing form carries the state it was drawn with, so posting it again (a reload) cannot silently
replace the token just handed out.
Each write is one audit line, refused ones included.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from sidecar import errors
from sidecar.api.admin.scim_tokens import issue_token, scim_base_url
from sidecar.api.pagination import PageTokens
from sidecar.console.auth import ConsoleSession
from sidecar.console.identities import identity_row
from sidecar.console.listing import Paging, path_id
from sidecar.console.pages import PREFIX, Form, Pages
from sidecar.console.wording import said
from sidecar.i18n import N_, Phrase
from sidecar.identity.store import IdentityStore
from sidecar.organization.manager import OrganizationManager
from sidecar.organization.model import Organization
from sidecar.organization.provisioning import ScimStore

_SPLIT = re.compile(r"[\s,]+")


@dataclass(frozen=True, slots=True)
class SsoConnection:
    """A single sign-on connection of an organization, as configured."""

    kind: str
    """``oidc`` (``selfservice.methods.oidc.config.providers[]``) or ``saml``
    (``selfservice.methods.saml.config.providers[]``)."""
    id: str
    label: str


def organization_url(organization_id: uuid.UUID | str, tail: str = "") -> str:
    return f"{PREFIX}/organizations/{organization_id}{tail}"


def _body(form: Form) -> dict[str, Any]:
    """The form as the admin API's JSON body: domains one a line (or separated by commas)."""
    body: dict[str, Any] = {
        "label": form.get("label", ""),
        "domains": [d for d in _SPLIT.split(form.get("domains", "")) if d],
    }
    if form.get("slug", "").strip():
        body["slug"] = form["slug"].strip()
    return body


_NOTICES = {
    "created": N_("Organization created."),
    "saved": N_("Organization saved."),
    "revoked": N_("SCIM token revoked: provisioning with it stops at once."),
}


class OrganizationPages:
    def __init__(
        self,
        pages: Pages,
        manager: OrganizationManager,
        identities: IdentityStore,
        scim: ScimStore,
        tokens: PageTokens,
        page_size: int,
        *,
        public_base_url: str,
        sso: Mapping[str, Sequence[SsoConnection]],
    ) -> None:
        """``sso``: the configured connections by organization id (lower-case text)."""
        self.pages = pages
        self.manager = manager
        self.identities = identities
        self.scim = scim
        self.paging = Paging(tokens, page_size)
        self.public_base_url = public_base_url
        self.sso = sso

    # --- list and create ------------------------------------------------------------------------

    async def list(self, request: Request, signed_in: ConsoleSession) -> Response:
        return await self._list(request, signed_in)

    async def _list(
        self,
        request: Request,
        signed_in: ConsoleSession,
        *,
        posted: Mapping[str, str] | None = None,
        problem: str = "",
        status: int = 200,
    ) -> Response:
        """``problem``: a manager's refusal (English), said in the reader's language."""
        q = request.query_params
        token = q.get("page_token") if posted is None else None
        after = self.paging.after(token)
        domain = (q.get("domain") or "").strip() if posted is None else ""
        rows = await self.manager.list(page_size=self.paging.fetch, after=after, domain=domain or None)
        page, next_url = self.paging.cut(rows, f"{PREFIX}/organizations", {"domain": domain}, lambda o: o.id)
        issued = await self.scim.tokens_issued([o.id for o in page])
        context = {
            "title": Phrase(N_("Organizations")),
            "rows": [
                {
                    "organization": o,
                    "url": organization_url(o.id),
                    "sso": self.sso.get(str(o.id), ()),
                    "scim_issued": issued.get(o.id),
                }
                for o in page
            ],
            "domain": domain,
            "next_url": next_url,
            "first_url": f"{PREFIX}/organizations" if token else None,
            "posted": posted or {},
            "problem": said(problem) if problem else "",
            "notice": Phrase(N_("Organization deleted.") if q.get("done") == "deleted" else ""),
        }
        return self.pages.render(
            "organizations.html", context, signed_in=signed_in, section="organizations", status=status
        )

    async def create(self, request: Request, signed_in: ConsoleSession, form: Form) -> Response:
        audit = self.pages.audit
        try:
            organization = await self.manager.create(_body(form))
        except (errors.BadRequest, errors.Conflict) as exc:
            audit.record(signed_in.actor, "organization.create", result="refused", detail=exc.message[:200])
            return await self._list(request, signed_in, posted=form, problem=exc.message, status=exc.code)
        audit.record(signed_in.actor, "organization.create", detail=f"organization {organization.id}")
        return self.pages.redirect(organization_url(organization.id, "?done=created"))

    # --- detail and edit ------------------------------------------------------------------------

    async def detail(self, request: Request, signed_in: ConsoleSession) -> Response:
        organization = await self.manager.get(path_id(request, "organization"))
        notice = Phrase(_NOTICES.get(request.query_params.get("done") or "", ""))
        return await self._detail(organization, signed_in, notice=notice)

    async def _detail(
        self,
        organization: Organization,
        signed_in: ConsoleSession,
        *,
        notice: Phrase | None = None,
        problem: str = "",
        posted: Mapping[str, str] | None = None,
        new_token: str = "",
        status: int = 200,
    ) -> Response:
        members = await self.identities.list(page_size=self.paging.fetch, organization_id=organization.id)
        issued = (await self.scim.tokens_issued([organization.id])).get(organization.id)
        form = posted or {
            "label": organization.label,
            "slug": organization.slug,
            "domains": "\n".join(organization.domains),
        }
        context = {
            "title": organization.label,
            "organization": organization,
            "form": form,
            "sso": self.sso.get(str(organization.id), ()),
            "scim_url": scim_base_url(self.public_base_url, organization),
            "scim_issued": issued,
            "scim_stamp": _stamp(issued),
            "new_token": new_token,
            "members": [identity_row(i) for i in members[: self.paging.size]],
            "more_members": len(members) > self.paging.size,
            "notice": notice,
            "problem": said(problem) if problem else "",
        }
        return self.pages.render(
            "organization.html", context, signed_in=signed_in, section="organizations", status=status
        )

    async def update(self, request: Request, signed_in: ConsoleSession, form: Form) -> Response:
        organization = await self.manager.get(path_id(request, "organization"))
        audit = self.pages.audit
        body = _body(form)
        body.setdefault("slug", organization.slug)
        try:
            await self.manager.update(organization.id, body)
        except (errors.BadRequest, errors.Conflict) as exc:
            audit.record(
                signed_in.actor,
                "organization.update",
                result="refused",
                detail=f"organization {organization.id}: {exc.message[:200]}",
            )
            return await self._detail(
                organization, signed_in, problem=exc.message, posted=form, status=exc.code
            )
        audit.record(signed_in.actor, "organization.update", detail=f"organization {organization.id}")
        return self.pages.redirect(organization_url(organization.id, "?done=saved"))

    # --- members --------------------------------------------------------------------------------

    async def members(self, request: Request, signed_in: ConsoleSession) -> Response:
        organization = await self.manager.get(path_id(request, "organization"))
        token = request.query_params.get("page_token")
        rows = await self.identities.list(
            page_size=self.paging.fetch, after=self.paging.after(token), organization_id=organization.id
        )
        base = organization_url(organization.id, "/members")
        page, next_url = self.paging.cut(rows, base, {}, lambda i: i.id)
        context = {
            "title": Phrase(N_("Members of {organization}"), organization=organization.label),
            "organization": organization,
            "members": [identity_row(i) for i in page],
            "next_url": next_url,
            "first_url": base if token else None,
        }
        return self.pages.render("members.html", context, signed_in=signed_in, section="organizations")

    # --- SCIM token -----------------------------------------------------------------------------

    async def issue_scim_token(self, request: Request, signed_in: ConsoleSession, form: Form) -> Response:
        organization = await self.manager.get(path_id(request, "organization"))
        issued = (await self.scim.tokens_issued([organization.id])).get(organization.id)
        if form.get("current", "") != _stamp(issued):
            # A stale form (or the browser posting it again on reload) would replace the token that
            # was just handed out: only a form drawn with the current token's state may issue one.
            self.pages.audit.record(
                signed_in.actor,
                "organization.scim_token.issue",
                result="refused",
                detail=f"organization {organization.id}: stale form",
            )
            raise errors.Conflict(
                N_("The SCIM token changed since this page was drawn: reload it and issue again.")
            )
        token = await issue_token(self.scim, organization.id)
        self.pages.audit.record(
            signed_in.actor, "organization.scim_token.issue", detail=f"organization {organization.id}"
        )
        # Drawn in the answer to this POST, never behind a URL: reloading cannot show it again.
        return await self._detail(
            organization,
            signed_in,
            notice=Phrase(
                N_("SCIM token issued. Copy it now: it is not shown again. Any older token stopped working.")
            ),
            new_token=token,
        )

    async def revoke_scim_token(self, request: Request, signed_in: ConsoleSession, form: Form) -> Response:
        organization = await self.manager.get(path_id(request, "organization"))
        done = await self.scim.delete_token(organization.id)
        self.pages.audit.record(
            signed_in.actor,
            "organization.scim_token.revoke",
            result="ok" if done else "refused",
            detail=f"organization {organization.id}",
        )
        if not done:
            raise errors.NotFound(N_("The organization has no SCIM token."))
        return self.pages.redirect(organization_url(organization.id, "?done=revoked#scim"))

    # --- delete ---------------------------------------------------------------------------------

    async def confirm_delete(self, request: Request, signed_in: ConsoleSession) -> Response:
        organization = await self.manager.get(path_id(request, "organization"))
        members = await self.identities.list(page_size=1, organization_id=organization.id)
        context = {
            "title": Phrase(N_("Delete this organization?")),
            "organization": organization,
            "has_members": bool(members),
        }
        return self.pages.render(
            "organization_delete.html", context, signed_in=signed_in, section="organizations"
        )

    async def delete(self, request: Request, signed_in: ConsoleSession, form: Form) -> Response:
        organization_id = path_id(request, "organization")
        if form.get("confirm") != str(organization_id):
            raise errors.BadRequest(N_("Deleting needs the confirmation from the delete page."))
        try:
            await self.manager.delete(organization_id)
        except (errors.NotFound, errors.Conflict) as exc:
            self.pages.audit.record(
                signed_in.actor,
                "organization.delete",
                result="refused",
                detail=f"organization {organization_id}: {exc.message[:200]}",
            )
            raise
        self.pages.audit.record(
            signed_in.actor, "organization.delete", detail=f"organization {organization_id}"
        )
        return self.pages.redirect(f"{PREFIX}/organizations?done=deleted")


def _stamp(issued: datetime | None) -> str:
    return issued.isoformat() if issued is not None else "none"

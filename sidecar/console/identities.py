"""Identity pages: search and pages, the detail page and its forms, create, delete.

Every write goes through ``IdentityManager`` (the API's PATCH and POST paths and their schema
validation), so the console can store nothing the admin API would refuse. Each write is one
audit line, refused ones included.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response

from sidecar import errors
from sidecar.api.admin import bodies
from sidecar.api.pagination import PageTokens
from sidecar.console import traits_form
from sidecar.console.auth import ConsoleSession
from sidecar.console.listing import Paging, path_id
from sidecar.console.pages import PREFIX, Form, Pages, Problem
from sidecar.console.wording import said
from sidecar.i18n import N_, Phrase, Phrases
from sidecar.identity.manager import IdentityManager
from sidecar.identity.model import Identity
from sidecar.identity.store import IdentityStore
from sidecar.schema.registry import SchemaRegistry
from sidecar.schema.violations import TraitsInvalid
from sidecar.security.identifiers import normalize_identifier
from sidecar.ui.wording import primary_identifier

MAX_QUERY = 256


def identity_url(identity_id: uuid.UUID | str, anchor: str = "") -> str:
    return f"{PREFIX}/identities/{identity_id}" + (f"#{anchor}" if anchor else "")


def _pretty(value: Any) -> str:
    return "" if value is None else json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


def identity_row(identity: Identity) -> dict[str, Any]:
    """An identity as a row of a list (identities, an organization's members)."""
    verified = any(a.verified for a in identity.verifiable_addresses)
    return {
        "id": str(identity.id),
        "url": identity_url(identity.id),
        "identifier": primary_identifier(identity.traits) or Phrase(N_("(no identifier)")),
        "schema_id": identity.schema_id,
        "state": identity.state,
        "verified": verified,
        "methods": sorted(identity.credentials),
        "created_at": identity.created_at,
    }


class IdentityPages:
    def __init__(
        self,
        pages: Pages,
        manager: IdentityManager,
        store: IdentityStore,
        schemas: SchemaRegistry,
        tokens: PageTokens,
        page_size: int,
        extras: Sequence[Any] = (),
    ) -> None:
        """``extras``: sections drawn on the detail page by other modules (sessions, recovery); each
        has ``async def detail_context(identity) -> dict``, merged into the page's context."""
        self.pages = pages
        self.manager = manager
        self.store = store
        self.schemas = schemas
        self.paging = Paging(tokens, page_size)
        self.extras = list(extras)

    # --- search ---------------------------------------------------------------------------------

    def _search_paths(self) -> list[str]:
        paths: list[str] = []
        for schema in self.schemas.all():
            for f in schema.trait_fields():
                if not f.is_array and f.type == "string" and f.path not in paths:
                    paths.append(f.path)
        return paths

    async def search(self, request: Request, signed_in: ConsoleSession) -> Response:
        q = (request.query_params.get("q") or "").strip()[:MAX_QUERY]
        token = request.query_params.get("page_token")
        after = self.paging.after(token)
        found: list[Identity] = []
        scope: Phrase | None = None
        if q:
            try:
                by_id = uuid.UUID(q)
            except ValueError:
                by_id = None
            if by_id is not None:
                identity = await self.store.get(by_id)
                if identity is not None:
                    return self.pages.redirect(identity_url(identity.id))
            path, sep, value = q.partition("=")
            known = self._search_paths()
            if sep and path.removeprefix("traits.") in known:
                paths, text = [path.removeprefix("traits.")], value.strip()
                scope = Phrase(
                    N_("Searching: trait {trait} contains “{text}”"),
                    trait=path.removeprefix("traits."),
                    text=text,
                )
            else:
                paths, text = known, q
                scope = Phrase(
                    N_("Searching: identifier, id, external id or trait containing “{text}”"), text=q
                )
                if after is None:
                    # Exact matches first: identifiers that are no trait (oidc subjects), external ids.
                    exact = await self.store.list(
                        page_size=10, credentials_identifier=normalize_identifier(q)
                    )
                    external = await self.store.get_by_external_id(q)
                    found = exact + ([external] if external else [])
            rows = await self.store.search_traits(paths, text, page_size=self.paging.fetch, after=after)
        else:
            rows = await self.store.list(page_size=self.paging.fetch, after=after)
        page, next_url = self.paging.cut(rows, f"{PREFIX}/identities", {"q": q}, lambda i: i.id)
        seen = {i.id for i in found}
        found += [i for i in page if i.id not in seen]
        context = {
            "title": Phrase(N_("Identities")),
            "notice": _notice(request.query_params.get("done")),
            "q": q,
            "scope": scope,
            "rows": [identity_row(i) for i in found],
            "next_url": next_url,
            "first_url": f"{PREFIX}/identities?" + urlencode({"q": q}) if token else None,
            "total": await self.store.count() if not q else None,
        }
        return self.pages.render("identities.html", context, signed_in=signed_in, section="identities")

    # --- detail ---------------------------------------------------------------------------------

    async def detail(self, request: Request, signed_in: ConsoleSession) -> Response:
        identity = await self.manager.get(path_id(request, "identity"))
        return await self._detail(identity, signed_in, notice=_notice(request.query_params.get("done")))

    async def _detail(
        self,
        identity: Identity,
        signed_in: ConsoleSession,
        *,
        notice: Phrase | None = None,
        trait_errors: Mapping[str, Sequence[str | Phrase]] | None = None,
        posted: Mapping[str, Any] | None = None,
        problem: str | Phrase = "",
        metadata_posted: Mapping[str, str] | None = None,
        status: int = 200,
    ) -> Response:
        schema = self.schemas.get(identity.schema_id)
        fields = traits_form.fields(schema, posted if posted is not None else identity.traits)
        known = {f.path for f in schema.trait_fields()}
        context: dict[str, Any] = {
            "title": primary_identifier(identity.traits) or str(identity.id),
            "identity": identity,
            "fields": fields,
            "trait_errors": _shown(trait_errors),
            "unlisted_traits": sorted(
                k for k in identity.traits if not any(p.split(".")[0] == k for p in known)
            ),
            "notice": notice,
            "problem": _phrase(problem),
            "metadata_public": (metadata_posted or {}).get(
                "metadata_public", _pretty(identity.metadata_public)
            ),
            "metadata_admin": (metadata_posted or {}).get("metadata_admin", _pretty(identity.metadata_admin)),
            "credentials": [
                {
                    "type": c.type,
                    "identifiers": [i for i in c.identifiers if i],
                    "created_at": c.created_at,
                    "updated_at": c.updated_at,
                }
                for c in sorted(identity.credentials.values(), key=lambda c: c.type)
            ],
        }
        for extra in self.extras:
            context.update(await extra.detail_context(identity))
        return self.pages.render(
            "identity.html", context, signed_in=signed_in, section="identities", status=status
        )

    # --- edits ----------------------------------------------------------------------------------

    async def update_traits(self, request: Request, signed_in: ConsoleSession, form: Form) -> Response:
        identity = await self.manager.get(path_id(request, "identity"))
        schema = self.schemas.get(identity.schema_id)
        traits, found = traits_form.read(schema, form, identity.traits)
        problems: Mapping[str, Sequence[str | Phrase]] = found
        audit = self.pages.audit
        if not problems:
            try:
                await self.manager.patch(identity.id, [{"op": "replace", "path": "/traits", "value": traits}])
            except errors.ValidationError as exc:
                problems = _problems(exc)
            except errors.Conflict as exc:
                audit.record(
                    signed_in.actor, "identity.update_traits", identity_id=identity.id, result="refused"
                )
                return await self._detail(identity, signed_in, problem=exc.message, posted=traits, status=409)
        if problems:
            audit.record(
                signed_in.actor,
                "identity.update_traits",
                identity_id=identity.id,
                result="refused",
                detail="invalid",
            )
            return await self._detail(identity, signed_in, trait_errors=problems, posted=traits, status=400)
        audit.record(signed_in.actor, "identity.update_traits", identity_id=identity.id)
        audit.security("identity.updated", request, identity_id=identity.id, operation="patch:traits")
        return self.pages.redirect(f"{identity_url(identity.id)}?done=traits#traits")

    async def update_state(self, request: Request, signed_in: ConsoleSession, form: Form) -> Response:
        identity_id = path_id(request, "identity")
        state = form.get("state", "")
        if state not in ("active", "inactive"):
            raise errors.BadRequest(N_("The state must be active or inactive."))
        await self.manager.patch(identity_id, [{"op": "replace", "path": "/state", "value": state}])
        self.pages.audit.record(signed_in.actor, "identity.set_state", identity_id=identity_id, detail=state)
        self.pages.audit.security(
            "identity.updated", request, identity_id=identity_id, operation="patch:state"
        )
        return self.pages.redirect(f"{identity_url(identity_id)}?done=state")

    async def update_metadata(self, request: Request, signed_in: ConsoleSession, form: Form) -> Response:
        identity = await self.manager.get(path_id(request, "identity"))
        ops: list[dict[str, Any]] = []
        posted = {k: form.get(k, "") for k in ("metadata_public", "metadata_admin")}
        for key, raw in posted.items():
            try:
                value = json.loads(raw) if raw.strip() else None
            except ValueError as exc:
                self.pages.audit.record(
                    signed_in.actor, "identity.update_metadata", identity_id=identity.id, result="refused"
                )
                return await self._detail(
                    identity,
                    signed_in,
                    problem=Phrase(N_("{field} is not valid JSON: {error}"), field=key, error=str(exc)),
                    metadata_posted=posted,
                    status=400,
                )
            # "add" sets an object member whether or not it exists yet (RFC 6902 §4.1).
            ops.append({"op": "add", "path": f"/{key}", "value": value})
        await self.manager.patch(identity.id, ops)
        self.pages.audit.record(signed_in.actor, "identity.update_metadata", identity_id=identity.id)
        self.pages.audit.security(
            "identity.updated", request, identity_id=identity.id, operation="patch:metadata"
        )
        return self.pages.redirect(f"{identity_url(identity.id)}?done=metadata#metadata")

    async def delete_credential(self, request: Request, signed_in: ConsoleSession, form: Form) -> Response:
        identity_id = path_id(request, "identity")
        kind = request.path_params["type"]
        try:
            await self.manager.delete_credential(identity_id, kind)
        except errors.BadRequest as exc:
            self.pages.audit.record(
                signed_in.actor,
                "identity.delete_credential",
                identity_id=identity_id,
                result="refused",
                detail=kind,
            )
            identity = await self.manager.get(identity_id)
            return await self._detail(identity, signed_in, problem=exc.message, status=400)
        self.pages.audit.record(
            signed_in.actor, "identity.delete_credential", identity_id=identity_id, detail=kind
        )
        self.pages.audit.security(
            "identity.updated", request, identity_id=identity_id, operation=f"delete_credential:{kind}"
        )
        return self.pages.redirect(f"{identity_url(identity_id)}?done=credential#credentials")

    # --- delete ---------------------------------------------------------------------------------

    async def confirm_delete(self, request: Request, signed_in: ConsoleSession) -> Response:
        identity = await self.manager.get(path_id(request, "identity"))
        context = {
            "title": Phrase(N_("Delete this identity?")),
            "identity": identity,
            "identifier": primary_identifier(identity.traits) or str(identity.id),
        }
        return self.pages.render("delete.html", context, signed_in=signed_in, section="identities")

    async def delete(self, request: Request, signed_in: ConsoleSession, form: Form) -> Response:
        identity_id = path_id(request, "identity")
        if form.get("confirm") != str(identity_id):
            raise errors.BadRequest(N_("Deleting needs the confirmation from the delete page."))
        await self.manager.delete(identity_id)
        self.pages.audit.record(signed_in.actor, "identity.delete", identity_id=identity_id)
        self.pages.audit.security("identity.deleted", request, identity_id=identity_id)
        return self.pages.redirect(f"{PREFIX}/identities?done=deleted")

    # --- create ---------------------------------------------------------------------------------

    def _schema_for(self, raw: str | None) -> Any:
        if not raw:
            return self.schemas.default()
        schema = self.schemas.find(raw)
        if schema is None:
            raise Problem(400, Phrase(N_("There is no identity schema “{schema}”."), schema=raw[:64]))
        return schema

    async def new(self, request: Request, signed_in: ConsoleSession) -> Response:
        schema = self._schema_for(request.query_params.get("schema"))
        return self._new_page(signed_in, schema)

    def _new_page(
        self,
        signed_in: ConsoleSession,
        schema: Any,
        *,
        posted: Mapping[str, Any] | None = None,
        trait_errors: Mapping[str, Sequence[str | Phrase]] | None = None,
        problem: str | Phrase = "",
        state: str = "active",
        status: int = 200,
    ) -> Response:
        context = {
            "title": Phrase(N_("New identity")),
            "schema": schema,
            "schemas": [s.id for s in self.schemas.all()],
            "fields": traits_form.fields(schema, posted),
            "trait_errors": _shown(trait_errors),
            "problem": _phrase(problem),
            "state": state,
        }
        return self.pages.render(
            "new.html", context, signed_in=signed_in, section="identities", status=status
        )

    async def create(self, request: Request, signed_in: ConsoleSession, form: Form) -> Response:
        schema = self._schema_for(form.get("schema_id"))
        traits, found = traits_form.read(schema, form, None)
        problems: Mapping[str, Sequence[str | Phrase]] = found
        state = form.get("state", "active")
        body: dict[str, Any] = {"schema_id": schema.id, "traits": traits, "state": state}
        password = form.get("password", "")
        if password:
            body["credentials"] = {"password": {"config": {"password": password}}}
        audit = self.pages.audit
        if not problems:
            try:
                identity = await self.manager.create(bodies.identity_spec(body))
            except errors.ValidationError as exc:
                problems = _problems(exc)
            except errors.Conflict as exc:
                audit.record(signed_in.actor, "identity.create", result="refused", detail="conflict")
                return self._new_page(
                    signed_in, schema, posted=traits, problem=exc.message, state=state, status=409
                )
            else:
                audit.record(signed_in.actor, "identity.create", identity_id=identity.id)
                audit.security("identity.created", request, identity_id=identity.id)
                return self.pages.redirect(f"{identity_url(identity.id)}?done=created")
        audit.record(signed_in.actor, "identity.create", result="refused", detail="invalid")
        general = [m for k, v in problems.items() if not k.startswith("traits.") for m in v]
        return self._new_page(
            signed_in,
            schema,
            posted=traits,
            trait_errors=problems,
            problem=Phrases(general, "; ") if general else "",
            state=state,
            status=400,
        )


_NOTICES = {
    "traits": N_("Traits saved."),
    "state": N_("State changed."),
    "metadata": N_("Metadata saved."),
    "credential": N_("Credential removed."),
    "created": N_("Identity created."),
    "deleted": N_("Identity deleted."),
    "session": N_("Session revoked."),
    "sessions": N_("All sessions revoked."),
}


def _notice(key: str | None) -> Phrase:
    return Phrase(_NOTICES.get(key or "", ""))


def _phrase(text: str | Phrase) -> Phrase:
    """A message as shown: the console's own are msgids, the schema's violations phrases with
    their Kratos ids, the managers' refusals found among their msgids (``wording.said``)."""
    return said(text)


def _problems(exc: errors.ValidationError) -> dict[str, list[str | Phrase]]:
    """A refusal's messages by field: the schema's as phrases (said in the reader's language)."""
    if isinstance(exc, TraitsInvalid):
        return {path: list(found) for path, found in exc.violations.items()}
    return {
        path: list(texts) for path, texts in (exc.messages or {"traits": [exc.reason or exc.message]}).items()
    }


def _shown(trait_errors: Mapping[str, Sequence[str | Phrase]] | None) -> dict[str, list[Phrase]]:
    return {path: [_phrase(m) for m in texts] for path, texts in (trait_errors or {}).items()}

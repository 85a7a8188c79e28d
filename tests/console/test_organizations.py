"""Console organization pages: list and find by domain, create, edit (label, slug, domains) as the
admin API validates, single sign-on connections from the configuration, members with pages, the SCIM
token (shown once, listed by when it was issued, rotated, revoked), delete with confirmation; each
write audited, every POST behind the session, same-site and CSRF checks."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from sidecar.identity.manager import IdentitySpec
from sidecar.security.tokens import digest
from tests.console.conftest import KEY, Console, MakeConsole

SSO_ORG = "5b0c6f7e-3f0e-4a51-9a59-0d8f4e2a7c11"


@pytest.fixture
async def console(make_console: MakeConsole) -> Console:
    provider = {
        "id": "acme-okta",
        "provider": "generic",
        "label": "Acme Okta",
        "client_id": "sidecar",
        "client_secret": "not-used",
        "issuer_url": "https://idp.acme.test",
        "store_tokens": False,
        "organization_id": SSO_ORG,
    }
    saml = {
        "id": "acme-saml",
        "label": "Acme SAML",
        "idp_metadata_url": "https://idp.acme.test/saml/metadata",  # fetched when first needed
        "organization_id": SSO_ORG,
    }
    c = await make_console(
        serve={"admin": {"api_key": KEY, "console": {"page_size": 2}}},
        selfservice={
            "methods": {
                "oidc": {"enabled": True, "config": {"providers": [provider]}},
                "saml": {"enabled": True, "config": {"providers": [saml]}},
            }
        },
    )
    await c.sign_in()
    return c


def org_ids(html: str) -> list[str]:
    return re.findall(r'data-organization="([0-9a-f-]{36})"', html)


def member_ids(html: str) -> list[str]:
    return re.findall(r'<div class="id">([0-9a-f-]{36})</div>', html)


async def create(console: Console, label: str, domains: str = "", slug: str = "") -> str:
    answer = await console.post(
        "/console/organizations/new", {"label": label, "domains": domains, "slug": slug}
    )
    assert answer.status_code == 303, answer.text[:2000]
    found = re.fullmatch(r"/console/organizations/([0-9a-f-]{36})\?done=created", answer.headers["location"])
    assert found, answer.headers["location"]
    return found.group(1)


async def member(console: Console, email: str, organization_id: str | None) -> str:
    spec = IdentitySpec(
        traits={"email": email},
        organization_id=uuid.UUID(organization_id) if organization_id else None,
    )
    return str((await console.services.identities.create(spec)).id)


async def test_create_list_find_by_domain_and_pages(console: Console) -> None:
    c = console.client
    empty = await c.get("/console/organizations")
    assert empty.status_code == 200
    assert 'aria-current="page">Organizations</a>' in empty.text  # in the navigation, current
    assert "No organization" in empty.text

    acme = await create(console, "ACME Corp.", "acme.test\nAcme-Mail.EXAMPLE.")
    page = await c.get(f"/console/organizations/{acme}?done=created")
    assert "Organization created." in page.text
    # The slug proposed from the label, the domains in their canonical form, one a line.
    assert 'name="slug" value="acme-corp"' in page.text
    shown = re.search(r'name="domains" rows="4">([^<]*)</textarea>', page.text)
    assert shown and sorted(shown.group(1).split("\n")) == ["acme-mail.example", "acme.test"]
    beta = await create(console, "Beta", "beta.test", slug="beta-gmbh")
    gamma = await create(console, "Gamma")

    first = await c.get("/console/organizations")
    assert len(org_ids(first.text)) == 2
    nxt = re.search(r'href="([^"]+)" rel="next"', first.text)
    assert nxt
    second = await c.get(nxt.group(1).replace("&amp;", "&"))
    assert sorted(org_ids(first.text) + org_ids(second.text)) == sorted([acme, beta, gamma])
    assert "beta-gmbh" in first.text + second.text

    by_domain = await c.get("/console/organizations", params={"domain": "ACME-mail.example"})
    assert org_ids(by_domain.text) == [acme]
    nobody = await c.get("/console/organizations", params={"domain": "nobody.test"})
    assert org_ids(nobody.text) == [] and "No organization owns nobody.test" in nobody.text
    bad_domain = await c.get("/console/organizations", params={"domain": "not a domain"})
    assert bad_domain.status_code == 400 and "is not a" in bad_domain.text
    forged = await c.get("/console/organizations", params={"page_token": "forged"})
    assert forged.status_code == 400 and "page token" in forged.text


async def test_create_and_edit_are_validated_as_the_api_validates(
    console: Console, audit: Callable[[], list[dict[str, Any]]]
) -> None:
    c = console.client
    acme = await create(console, "Acme", "acme.test")

    no_name = await console.post("/console/organizations/new", {"label": "  ", "domains": "x.test"})
    assert no_name.status_code == 400
    assert "label: must be a non-empty string" in no_name.text
    assert ">x.test</textarea>" in no_name.text  # what was typed is kept
    taken = await console.post("/console/organizations/new", {"label": "Other", "domains": "ACME.test"})
    assert taken.status_code == 409
    bad_slug = await console.post("/console/organizations/new", {"label": "Other", "slug": "Not A Slug"})
    assert bad_slug.status_code == 400 and "slug:" in bad_slug.text
    assert [o.label for o in await console.services.organizations.list(page_size=10)] == ["Acme"]

    edit = {"label": "Acme Inc.", "slug": "acme-inc", "domains": "acme.test, acme.example"}
    saved = await console.post(f"/console/organizations/{acme}", edit)
    assert saved.status_code == 303 and saved.headers["location"].endswith("?done=saved")
    stored = await console.services.organizations.get(uuid.UUID(acme))
    assert (stored.label, stored.slug, set(stored.domains)) == (
        "Acme Inc.",
        "acme-inc",
        {"acme.example", "acme.test"},
    )

    refused = await console.post(
        f"/console/organizations/{acme}", {**edit, "domains": "acme.test\nhttp://x/"}
    )
    assert refused.status_code == 400 and "domains:" in refused.text
    assert "http://x/" in refused.text  # the form is drawn again with what was typed
    after = await console.services.organizations.get(uuid.UUID(acme))
    assert set(after.domains) == {"acme.example", "acme.test"}

    missing = await c.get(f"/console/organizations/{uuid.uuid4()}")
    assert missing.status_code == 404
    assert (await c.get("/console/organizations/not-a-uuid")).status_code == 404

    lines = [(a["action"], a["result"]) for a in audit() if a["action"].startswith("organization.")]
    assert lines == [
        ("organization.create", "ok"),
        ("organization.create", "refused"),
        ("organization.create", "refused"),
        ("organization.create", "refused"),
        ("organization.update", "ok"),
        ("organization.update", "refused"),
    ]


async def test_single_sign_on_connections_come_from_the_configuration(console: Console) -> None:
    await console.services.organizations.create({"id": SSO_ORG, "label": "Acme", "domains": ["acme.test"]})
    plain = await create(console, "Plain")
    listing = await console.client.get("/console/organizations")
    assert "Acme Okta <span" in listing.text
    acme = await console.client.get(f"/console/organizations/{SSO_ORG}")
    assert "<td>Acme Okta</td><td>oidc</td>" in acme.text and "acme-okta" in acme.text
    assert "<td>Acme SAML</td><td>saml</td>" in acme.text and "acme-saml" in acme.text
    other = await console.client.get(f"/console/organizations/{plain}")
    assert "No single sign-on connection" in other.text and "Acme Okta" not in other.text


async def test_members_are_the_identities_of_the_organization(console: Console) -> None:
    acme = await create(console, "Acme", "acme.test")
    beta = await create(console, "Beta")
    ours = sorted([await member(console, f"m{i}@acme.test", acme) for i in range(3)])
    theirs = await member(console, "b@beta.test", beta)
    loner = await member(console, "x@nowhere.test", None)

    detail = await console.client.get(f"/console/organizations/{acme}")
    assert len(member_ids(detail.text)) == 2 and "All members" in detail.text
    first = await console.client.get(f"/console/organizations/{acme}/members")
    nxt = re.search(r'href="([^"]+)" rel="next"', first.text)
    assert nxt
    second = await console.client.get(nxt.group(1).replace("&amp;", "&"))
    assert sorted(member_ids(first.text) + member_ids(second.text)) == ours
    assert f'href="/console/identities/{ours[0]}"' in first.text + second.text
    only = await console.client.get(f"/console/organizations/{beta}/members")
    assert member_ids(only.text) == [theirs] and loner not in only.text


async def test_the_scim_token_is_shown_once_then_rotated_and_revoked(
    console: Console, audit: Callable[[], list[dict[str, Any]]]
) -> None:
    store = console.services.database.scim
    acme = await create(console, "Acme", slug="acme")
    beta = await create(console, "Beta")
    page = await console.client.get(f"/console/organizations/{acme}")
    assert "No token: SCIM provisioning is off" in page.text
    assert "<code>http://127.0.0.1:4433/.auth/scim/v2/acme</code>" in page.text

    assert 'name="current" value="none"' in page.text
    issued = await console.post(f"/console/organizations/{acme}/scim-token", {"current": "none"})
    assert issued.status_code == 200 and issued.headers["cache-control"] == "no-store"
    shown = re.search(r"<p class=\"secret\" data-scim-token>(scim_[A-Za-z0-9_-]+)</p>", issued.text)
    assert shown, issued.text[:3000]
    token = shown.group(1)
    assert await store.organization_of_token(digest(token)) == uuid.UUID(acme)
    # Never again: not on the page, not in the list, which says when it was issued.
    again = await console.client.get(f"/console/organizations/{acme}")
    assert token not in again.text and "A token is in use, issued" in again.text
    listing = await console.client.get("/console/organizations")
    assert token not in listing.text
    rows = dict(
        re.findall(
            r'data-organization="([0-9a-f-]{36})">.*?<td class="wide">([^<]*)</td>\n</tr>', listing.text, re.S
        )
    )
    assert rows[acme].startswith("issued ") and rows[beta] == "none"

    # The same form posted again (a reload of the answer) would replace the token just handed out.
    replayed = await console.post(f"/console/organizations/{acme}/scim-token", {"current": "none"})
    assert replayed.status_code == 409 and "reload it" in replayed.text
    assert await store.organization_of_token(digest(token)) == uuid.UUID(acme)
    stamp = re.search(r'name="current" value="([^"]+)"', again.text)
    assert stamp and stamp.group(1) != "none"
    rotated = await console.post(f"/console/organizations/{acme}/scim-token", {"current": stamp.group(1)})
    new = re.search(r"data-scim-token>(scim_[A-Za-z0-9_-]+)<", rotated.text)
    assert new and new.group(1) != token
    assert await store.organization_of_token(digest(token)) is None
    assert await store.organization_of_token(digest(new.group(1))) == uuid.UUID(acme)

    revoked = await console.post(f"/console/organizations/{acme}/scim-token/revoke")
    assert revoked.status_code == 303 and "done=revoked" in revoked.headers["location"]
    assert await store.organization_of_token(digest(new.group(1))) is None
    twice = await console.post(f"/console/organizations/{acme}/scim-token/revoke")
    assert twice.status_code == 404 and "has no SCIM token" in twice.text
    actions = [(a["action"], a["result"]) for a in audit() if "scim_token" in a["action"]]
    assert actions == [
        ("organization.scim_token.issue", "ok"),
        ("organization.scim_token.issue", "refused"),
        ("organization.scim_token.issue", "ok"),
        ("organization.scim_token.revoke", "ok"),
        ("organization.scim_token.revoke", "refused"),
    ]
    assert all(token not in str(a) for a in audit())


async def test_delete_needs_the_confirmation_and_no_members(
    console: Console, audit: Callable[[], list[dict[str, Any]]]
) -> None:
    acme = await create(console, "Acme", "acme.test")
    someone = await member(console, "a@acme.test", acme)
    confirm = await console.client.get(f"/console/organizations/{acme}/delete")
    assert confirm.status_code == 200 and "Identities still belong to" in confirm.text
    assert f'name="confirm" value="{acme}"' in confirm.text

    unconfirmed = await console.post(f"/console/organizations/{acme}/delete")
    assert unconfirmed.status_code == 400 and "confirmation" in unconfirmed.text
    with_members = await console.post(f"/console/organizations/{acme}/delete", {"confirm": acme})
    assert with_members.status_code == 409 and "still has identities" in with_members.text
    assert await console.services.organizations.find(acme) is not None

    await console.services.identities.delete(uuid.UUID(someone))
    done = await console.post(f"/console/organizations/{acme}/delete", {"confirm": acme})
    assert done.status_code == 303 and done.headers["location"] == "/console/organizations?done=deleted"
    assert await console.services.organizations.find(acme) is None
    gone = await console.post(f"/console/organizations/{acme}/delete", {"confirm": acme})
    assert gone.status_code == 404
    lines = [(a["action"], a["result"]) for a in audit() if a["action"] == "organization.delete"]
    assert lines == [
        ("organization.delete", "refused"),
        ("organization.delete", "ok"),
        ("organization.delete", "refused"),
    ]


async def test_every_organization_post_needs_session_same_site_and_csrf(make_console: MakeConsole) -> None:
    c = await make_console()
    signed_out = await c.client.get("/console/organizations")
    assert signed_out.status_code == 303 and "/console/login" in signed_out.headers["location"]
    assert (await c.client.post("/console/organizations/new", data={"label": "X"})).status_code == 401
    await c.sign_in()
    acme = await create(c, "Acme")
    token = await c.csrf()
    for path in (
        "/console/organizations/new",
        f"/console/organizations/{acme}",
        f"/console/organizations/{acme}/scim-token",
        f"/console/organizations/{acme}/scim-token/revoke",
        f"/console/organizations/{acme}/delete",
    ):
        forged = await c.client.post(path, data={"csrf_token": "forged", "label": "Y", "confirm": acme})
        assert forged.status_code == 403, path
        cross = await c.client.post(
            path,
            data={"csrf_token": token, "label": "Y", "confirm": acme},
            headers={"Origin": "http://evil.test"},
        )
        assert cross.status_code == 403, path
    stored = await c.services.organizations.get(uuid.UUID(acme))
    assert stored.label == "Acme"
    assert await c.services.database.scim.tokens_issued([stored.id]) == {}

"""The console's organization pages in Debian's Chromium against ``sidecar serve``: create an
organization, fix a refused domain, issue a SCIM token (shown once) and provision a user with it
over HTTP, see the user among the members, revoke the token (SCIM refuses it at once), delete the
organization after its member is gone. Screenshots go to ``tests/artifacts/console-organization*.png``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import Browser
from tests.e2e.test_browser_console import no_sideways_scroll
from tests.ops.serve import Proc, base_config, migrate, ports, running, serve_argv, write_config

pytestmark = pytest.mark.e2e
KEY = "console-org-e2e-key-0123456789abcdef"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp = tmp_path_factory.mktemp("console-organizations")
    public_port, admin_port = ports()
    config = base_config(tmp, public_port, admin_port, log={"format": "json", "level": "warning"})
    config["serve"]["admin"]["api_key"] = KEY
    path = write_config(tmp / "sidecar.yaml", config)
    migrate(path, tmp)
    with running(serve_argv(path), cwd=tmp, public_port=public_port, admin_port=admin_port) as proc:
        yield proc


def test_organizations_in_the_console(browser: Browser, site: Proc) -> None:
    page = browser.page
    page.goto(f"{site.admin_url}/console/organizations")
    page.wait_for_url(re.compile(r"/console/login\?next="))
    page.get_by_label("Your name").fill("Grace Operator")
    page.get_by_label("Admin API key").fill(KEY)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{site.admin_url}/console/organizations")

    # Create: a refused domain first (the form keeps what was typed), then a good one.
    page.get_by_label("Name", exact=True).fill("Acme Corp.")
    page.get_by_label("Email domains").fill("acme.test\nhttp://not-a-domain/")
    page.get_by_role("button", name="Create organization").click()
    expect(page.get_by_role("alert")).to_contain_text("domains:")
    expect(page.get_by_label("Name", exact=True)).to_have_value("Acme Corp.")
    page.get_by_label("Email domains").fill("acmecorp.com\nacme.example")
    page.get_by_role("button", name="Create organization").click()
    expect(page.get_by_role("status")).to_have_text("Organization created.")
    organization_id = page.url.split("/organizations/")[1].split("?")[0]

    # A SCIM token, shown once; provisioning with it over HTTP makes a member.
    page.get_by_role("button", name="Issue a token").click()
    token = page.locator("[data-scim-token]").inner_text().strip()
    assert token.startswith("scim_")
    scim_url = page.locator("#scim code").inner_text().strip()
    assert scim_url == f"{site.public_url}/.auth/scim/v2/acme-corp"
    browser.screenshot("console-organization-token")
    auth = {"Authorization": f"Bearer {token}"}
    user = {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
        "userName": "ada@acmecorp.com",
        "emails": [{"value": "ada@acmecorp.com", "primary": True}],
    }
    created = httpx.post(f"{scim_url}/Users", json=user, headers=auth, timeout=10)
    assert created.status_code == 201, created.text
    # Reloading posts the form again: refused, so the token just handed out keeps working.
    page.reload()
    expect(page.get_by_role("alert")).to_contain_text("The SCIM token changed since this page was drawn")
    assert httpx.get(f"{scim_url}/Users", headers=auth, timeout=10).status_code == 200
    page.goto(f"{site.admin_url}/console/organizations/{organization_id}")
    expect(page.locator("[data-scim-token]")).to_have_count(0)
    expect(page.locator("#scim")).to_contain_text("A token is in use, issued")
    expect(page.locator("#members")).to_contain_text("ada@acmecorp.com")
    browser.screenshot("console-organization")

    # At a phone's width: no sideways scrolling on the list or the organization's page.
    page.set_viewport_size({"width": 390, "height": 844})
    for url in ("/console/organizations", f"/console/organizations/{organization_id}"):
        page.goto(f"{site.admin_url}{url}")
        assert no_sideways_scroll(page), url
        clipped = page.evaluate(
            "[...document.querySelectorAll('.panel')].some(p => p.scrollWidth > p.clientWidth + 1)"
        )
        assert not clipped, url  # nor inside a panel
    browser.screenshot("console-organization-phone")
    page.set_viewport_size({"width": 1024, "height": 800})

    # Revoke: SCIM refuses the token at once.
    page.get_by_role("button", name="Revoke token").click()
    expect(page.get_by_role("status")).to_contain_text("SCIM token revoked")
    assert httpx.get(f"{scim_url}/Users", headers=auth, timeout=10).status_code == 401

    # Delete: refused while a member remains, then done once the member is gone.
    page.get_by_role("link", name="Delete organization…").click()
    expect(page.get_by_role("alert")).to_contain_text("Identities still belong to")
    page.get_by_role("button", name="Delete permanently").click()
    expect(page.get_by_role("alert")).to_contain_text("still has identities")
    member_id = created.json()["id"]
    headers = {"Authorization": f"Bearer {KEY}"}
    gone = httpx.delete(f"{site.admin_url}/admin/identities/{member_id}", headers=headers, timeout=10)
    assert gone.status_code == 204
    page.goto(f"{site.admin_url}/console/organizations/{organization_id}/delete")
    page.get_by_role("button", name="Delete permanently").click()
    expect(page.get_by_role("status")).to_have_text("Organization deleted.")
    assert (
        httpx.get(f"{site.admin_url}/admin/organizations/{organization_id}", headers=headers).status_code
        == 404
    )
    # The refused domain (400), the reload (409) and the delete with a member (409); nothing else.
    refused = [p for p in browser.problems if "the server responded with a status of 4" in p]
    assert len(refused) == 3, browser.problems
    assert [p for p in browser.problems if p not in refused] == []

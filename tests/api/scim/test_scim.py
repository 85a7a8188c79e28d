"""SCIM 2.0 per organization (``/.auth/scim/v2/<org>``) through a live sidecar on both SQL
backends: RFC 7643/7644 compliance by scim2-tester over real HTTP, and what each write does to
the identities, their roles and their sessions."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import httpx2
import pytest
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status, check_server

from tests.conftest import make_config
from tests.live import LiveSidecar, live_sidecar

SCIM_JSON = "application/scim+json"
USER = "urn:ietf:params:scim:schemas:core:2.0:User"
GROUP = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


@dataclass
class Org:
    id: str
    slug: str
    token: str
    base: str  # the SCIM base URL the admin API announced


@pytest.fixture
def sidecar(dsn: str) -> Iterator[LiveSidecar]:
    with live_sidecar(make_config(dsn=dsn)) as live:
        yield live


def make_org(sidecar: LiveSidecar, slug: str) -> Org:
    with httpx.Client(base_url=sidecar.admin_url, timeout=15) as admin:
        org = admin.post("/admin/organizations", json={"label": slug.upper(), "slug": slug}).json()
        issued = admin.post(f"/admin/organizations/{org['id']}/scim/token")
        assert issued.status_code == 201, issued.text
        body = issued.json()
    assert body["base_url"] == f"{sidecar.public_url}/scim/v2/{slug}"
    return Org(org["id"], slug, body["token"], body["base_url"])


def scim(org: Org) -> httpx.Client:
    return httpx.Client(base_url=org.base, headers={"Authorization": f"Bearer {org.token}"}, timeout=15)


OPTIONAL_EMAIL = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "type": "object",
    "properties": {
        "traits": {
            "type": "object",
            "properties": {
                "email": {"type": "string", "format": "email"},
                "username": {
                    "type": "string",
                    "ory.sh/kratos": {"credentials": {"password": {"identifier": True}}},
                },
            },
        }
    },
}


def test_scim2_tester_finds_no_error(tmp_path: Path, sqlite_dsn: str) -> None:
    """Protocol compliance (one backend: the provisioning test below runs the stores on both)."""
    # scim2-tester makes users with random userNames and no email: a schema that signs in by username.
    schema = tmp_path / "person.schema.json"
    schema.write_text(json.dumps(OPTIONAL_EMAIL))
    config = make_config(
        dsn=sqlite_dsn,
        identity={"default_schema_id": "person", "schemas": [{"id": "person", "url": f"file://{schema}"}]},
    )
    with live_sidecar(config) as sidecar:
        _tester(sidecar)


def _tester(sidecar: LiveSidecar) -> None:
    org = make_org(sidecar, "acme")
    with httpx2.Client(
        base_url=org.base, headers={"Authorization": f"Bearer {org.token}"}, timeout=30
    ) as http:
        client = SyncSCIMClient(http)
        results = check_server(client)
    assert results
    bad = [
        (r.title, r.resource_type, r.reason) for r in results if r.status in (Status.ERROR, Status.CRITICAL)
    ]
    assert bad == []
    assert sum(r.status is Status.SUCCESS for r in results) >= 20


def test_provisioning_identities_roles_and_refusals(sidecar: LiveSidecar) -> None:
    acme, other = make_org(sidecar, "acme"), make_org(sidecar, "globex")
    with scim(acme) as c, httpx.Client(base_url=sidecar.admin_url, timeout=15) as admin:
        # Tokens: none, wrong, another organization's, an unknown organization: the same 401.
        for headers, url in [
            ({}, f"{acme.base}/Users"),
            ({"Authorization": "Bearer nope"}, f"{acme.base}/Users"),
            ({"Authorization": f"Bearer {other.token}"}, f"{acme.base}/Users"),
            ({"Authorization": f"Bearer {acme.token}"}, f"{sidecar.public_url}/scim/v2/initech/Users"),
        ]:
            r = httpx.get(url, headers=headers, timeout=15)
            assert r.status_code == 401 and r.json()["status"] == "401", r.text
        assert c.get(f"{sidecar.public_url}/scim/v2/{acme.id}/Users").status_code == 200  # by id too

        made = c.post(
            "/Users",
            json={
                "schemas": [USER],
                "userName": "Ada",
                "emails": [{"value": "Ada@Acmecorp.com", "primary": True}],
                "password": "a long provisioned password 7",
            },
        )
        assert made.status_code == 201, made.text
        ada = made.json()
        assert "password" not in ada and ada["meta"]["version"] == 'W/"1"'
        assert made.headers["ETag"] == 'W/"1"'
        identity = admin.get(f"/admin/identities/{ada['id']}").json()
        assert identity["traits"]["email"] == "ada@acmecorp.com" and identity["organization_id"] == acme.id
        assert identity["state"] == "active"
        assert (
            c.post(
                "/Users", json={"schemas": [USER], "userName": "ADA", "emails": [{"value": "x@acmecorp.com"}]}
            ).status_code
            == 409
        )
        assert c.post("/Users", json={"schemas": [USER], "userName": "no-mail"}).status_code == 400

        for i in range(4):
            body = {"schemas": [USER], "userName": f"user{i}@acmecorp.com"}
            assert c.post("/Users", json=body).status_code == 201
        page = c.get("/Users", params={"startIndex": 2, "count": 2}).json()
        assert page["totalResults"] == 5 and page["startIndex"] == 2 and len(page["Resources"]) == 2
        found = c.get("/Users", params={"filter": 'userName eq "ada"'}).json()
        assert [u["id"] for u in found["Resources"]] == [ada["id"]]
        assert c.get("/Users", params={"filter": "userName eq"}).status_code == 400
        assert (
            httpx.get(f"{other.base}/Users", headers={"Authorization": f"Bearer {other.token}"}).json()[
                "totalResults"
            ]
            == 0
        )

        group = c.post(
            "/Groups", json={"schemas": [GROUP], "displayName": "admin", "members": [{"value": ada["id"]}]}
        )
        assert group.status_code == 201, group.text
        assert admin.get(f"/admin/identities/{ada['id']}").json()["metadata_public"]["roles"] == ["admin"]
        assert [g["display"] for g in c.get(f"/Users/{ada['id']}").json()["groups"]] == ["admin"]
        stranger = "00000000-0000-4000-8000-000000000000"
        bad = c.post(
            "/Groups", json={"schemas": [GROUP], "displayName": "x", "members": [{"value": stranger}]}
        )
        assert bad.status_code == 400

        # ETags: a stale If-Match is a 412 and changes nothing.
        gid = group.json()["id"]
        stale = c.patch(
            f"/Groups/{gid}",
            headers={"If-Match": 'W/"7"'},
            json={"schemas": [PATCH], "Operations": [{"op": "replace", "path": "displayName", "value": "y"}]},
        )
        assert stale.status_code == 412
        removed = c.patch(
            f"/Groups/{gid}",
            headers={"If-Match": group.headers["ETag"]},
            json={
                "schemas": [PATCH],
                "Operations": [{"op": "remove", "path": f'members[value eq "{ada["id"]}"]'}],
            },
        )
        assert removed.status_code in (200, 204), removed.text
        assert admin.get(f"/admin/identities/{ada['id']}").json()["metadata_public"]["roles"] == []

        off = c.patch(
            f"/Users/{ada['id']}",
            json={"schemas": [PATCH], "Operations": [{"op": "replace", "path": "active", "value": False}]},
        )
        assert off.status_code in (200, 204), off.text
        assert admin.get(f"/admin/identities/{ada['id']}").json()["state"] == "inactive"

        assert c.delete(f"/Users/{ada['id']}").status_code == 204
        assert c.get(f"/Users/{ada['id']}").status_code == 404
        assert admin.get(f"/admin/identities/{ada['id']}").status_code == 404

        # A new token replaces the old one at once; deleting it closes the endpoint.
        again = admin.post(f"/admin/organizations/{acme.id}/scim/token").json()["token"]
        assert c.get("/Users").status_code == 401
        assert (
            httpx.get(f"{acme.base}/Users", headers={"Authorization": f"Bearer {again}"}).status_code == 200
        )
        assert admin.delete(f"/admin/organizations/{acme.id}/scim/token").status_code == 204
        assert (
            httpx.get(f"{acme.base}/Users", headers={"Authorization": f"Bearer {again}"}).status_code == 401
        )


def test_a_patch_of_more_than_100_operations_is_refused_unapplied(sidecar: LiveSidecar) -> None:
    """A PATCH is applied one operation at a time on the event loop: 5,000 of them held the worker
    for ~30 s. Over 100 is a 400 (after the token check) and changes nothing; 100 still applies."""
    acme = make_org(sidecar, "acme")
    with scim(acme) as c:
        user = c.post(
            "/Users",
            json={"schemas": [USER], "userName": "ada", "emails": [{"value": "ada@acmecorp.com"}]},
        )
        assert user.status_code == 201, user.text
        path = f"/Users/{user.json()['id']}"

        def ops(n: int) -> dict[str, object]:
            replace = [{"op": "replace", "path": "displayName", "value": f"v{i}"} for i in range(n)]
            return {"schemas": [PATCH], "Operations": replace}

        refused = c.patch(path, json=ops(101))
        assert refused.status_code == 400 and refused.json()["scimType"] == "invalidValue", refused.text
        assert "displayName" not in c.get(path).json()
        stranger = httpx.patch(f"{acme.base}{path}", json=ops(101), timeout=15)
        assert stranger.status_code == 401, stranger.text
        applied = c.patch(path, json=ops(100))
        assert applied.status_code in (200, 204), applied.text
        assert c.get(path).json()["displayName"] == "v99"

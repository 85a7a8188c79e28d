"""Admin organization API (/admin/organizations) on both SQL backends, through a live sidecar."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import make_config
from tests.live import LiveSidecar, live_sidecar


@pytest.fixture
def sidecar(dsn: str) -> Iterator[LiveSidecar]:
    with live_sidecar(make_config(dsn=dsn)) as live:
        yield live


@pytest.fixture
def client(sidecar: LiveSidecar) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sidecar.admin_url, timeout=30) as c:
        yield c


def _error(resp: httpx.Response, status: int) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()["error"]
    assert body["code"] == status
    return str(body.get("reason") or body["message"])


def test_create_get_update_domains_delete(client: httpx.Client) -> None:
    created = client.post("/admin/organizations", json={"label": "ACME Corp.", "domains": ["ACME.test"]})
    assert created.status_code == 201, created.text
    org = created.json()
    assert org["label"] == "ACME Corp." and org["slug"] == "acme-corp" and org["domains"] == ["acme.test"]
    assert set(org) == {"id", "label", "slug", "domains", "created_at", "updated_at"}
    assert created.headers["Location"].endswith(f"/admin/organizations/{org['id']}")
    assert client.get(f"/admin/organizations/{org['id']}").json() == org
    assert client.get(f"/organizations/{org['id']}").json() == org  # Kratos' admin port: both paths

    put = client.put(
        f"/admin/organizations/{org['id']}",
        json={"label": "ACME", "slug": "acme", "domains": ["acme.test", "exämple.test"]},
    )
    assert put.status_code == 200, put.text
    assert put.json()["domains"] == ["acme.test", "xn--exmple-cua.test"] and put.json()["slug"] == "acme"
    patched = client.patch(f"/admin/organizations/{org['id']}", json={"label": "ACME Inc"})
    assert patched.json()["label"] == "ACME Inc" and patched.json()["slug"] == "acme"

    added = client.post(f"/admin/organizations/{org['id']}/domains", json={"domain": "acme.example"})
    assert added.status_code == 201 and "acme.example" in added.json()["domains"]
    assert client.delete(f"/admin/organizations/{org['id']}/domains/acme.test").status_code == 204
    assert client.delete(f"/admin/organizations/{org['id']}/domains/acme.test").status_code == 404
    listed = client.get("/admin/organizations", params={"domain": "ACME.example"}).json()
    assert [o["id"] for o in listed] == [org["id"]]
    assert client.get("/admin/organizations", params={"domain": "acme.test"}).json() == []

    assert client.delete(f"/admin/organizations/{org['id']}").status_code == 204
    _error(client.get(f"/admin/organizations/{org['id']}"), 404)
    _pages(client)


def _pages(client: httpx.Client) -> None:
    ids = [client.post("/admin/organizations", json={"label": f"Org {i}"}).json()["id"] for i in range(5)]
    first = client.get("/admin/organizations", params={"page_size": 2})
    assert len(first.json()) == 2 and 'rel="next"' in first.headers["Link"]
    token = first.headers["X-Next-Page-Token"]
    seen = [o["id"] for o in first.json()]
    while token:
        page = client.get("/admin/organizations", params={"page_size": 2, "page_token": token})
        seen += [o["id"] for o in page.json()]
        token = page.headers.get("X-Next-Page-Token")
    assert sorted(seen) == sorted(ids)
    _error(client.get("/admin/organizations", params={"page_token": "forged"}), 400)


BAD: list[tuple[object, str]] = [
    ({}, "label"),
    ({"label": ""}, "label"),
    ({"label": "x" * 300}, "label"),
    ({"label": "A", "slug": "Not A Slug"}, "slug"),
    ({"label": "A", "domains": "a.test"}, "domains"),
    ({"label": "A", "domains": ["a@b.test"]}, "domains"),
    ({"label": "A", "domains": ["localhost"]}, "domains"),
    ({"label": "A", "domains": ["*.a.test"]}, "domains"),
    ({"label": "A", "colour": "red"}, "unknown"),
    ({"label": "A", "id": "nope"}, "id"),
    ([], "object"),
]


def test_bad_input_conflicts_and_membership(client: httpx.Client) -> None:
    for body, word in BAD:
        assert word in _error(client.post("/admin/organizations", json=body), 400), body
    assert client.get("/admin/organizations").json() == []  # nothing half-written

    org = client.post("/admin/organizations", json={"label": "A", "domains": ["a.test"]}).json()
    _error(client.post("/admin/organizations", json={"label": "B", "domains": ["a.test"]}), 409)
    _error(client.post("/admin/organizations", json={"label": "A"}), 409)  # slug "a" taken
    _error(client.get("/admin/organizations/not-a-uuid"), 400)

    unknown = "00000000-0000-4000-8000-000000000000"
    identity = {"schema_id": "default", "traits": {"email": "m@a.test"}, "organization_id": unknown}
    assert "organization_id" in _error(client.post("/admin/identities", json=identity), 400)
    made = client.post("/admin/identities", json={**identity, "organization_id": org["id"]})
    assert made.status_code == 201 and made.json()["organization_id"] == org["id"]
    client.post("/admin/identities", json={"schema_id": "default", "traits": {"email": "o@b.test"}})
    members = client.get("/admin/identities", params={"organization_id": org["id"]}).json()
    assert [m["id"] for m in members] == [made.json()["id"]]
    _error(client.get("/admin/identities", params={"organization_id": "x"}), 400)

    _error(client.delete(f"/admin/organizations/{org['id']}"), 409)
    assert client.delete(f"/admin/identities/{made.json()['id']}").status_code == 204
    assert client.delete(f"/admin/organizations/{org['id']}").status_code == 204

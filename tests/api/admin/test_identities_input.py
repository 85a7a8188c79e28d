"""Bad input never gets a 500 or a half-written identity; races on one email give one identity."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import make_config
from tests.live import LiveSidecar, live_sidecar

VALID = {"schema_id": "default", "traits": {"email": "valid@example.test"}}


@pytest.fixture
def sidecar(dsn: str) -> Iterator[LiveSidecar]:
    with live_sidecar(make_config(dsn=dsn)) as live:
        yield live


@pytest.fixture
def client(sidecar: LiveSidecar) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sidecar.admin_url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def refusing(module_dsn: str) -> Iterator[httpx.Client]:
    """One sidecar per backend for the refusal cases: each refused body must leave the identity
    count where it found it, so they need no server (start, migration) of their own."""
    with (
        live_sidecar(make_config(dsn=module_dsn)) as live,
        httpx.Client(base_url=live.admin_url, timeout=30) as c,
    ):
        yield c


def _count(client: httpx.Client) -> int:
    return len(client.get("/admin/identities", params={"page_size": 500}).json())


def _assert_kratos_error(resp: httpx.Response, status: int | None = None) -> None:
    assert 400 <= resp.status_code < 500, resp.text
    if status is not None:
        assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body["error"]) >= {"code", "status", "message"}
    assert body["error"]["code"] == resp.status_code


def test_twenty_parallel_creates_give_one_identity(client: httpx.Client, sidecar: LiveSidecar) -> None:
    body = {"schema_id": "default", "traits": {"email": "race@example.test"}}

    def create(_: int) -> int:
        with httpx.Client(base_url=sidecar.admin_url, timeout=30) as c:
            return c.post("/admin/identities", json=body).status_code

    with ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(create, range(20)))
    assert codes.count(201) == 1, codes
    assert codes.count(409) == 19, codes
    assert _count(client) == 1


DEEP = "[" * 5000 + "]" * 5000
BAD_BODIES = [
    pytest.param(b"{not json", "application/json", id="garbage-json"),
    pytest.param(b"", "application/json", id="empty"),
    pytest.param(b"[]", "application/json", id="array"),
    pytest.param(b"\xff\xfe\x00", "application/json", id="not-utf8"),
    pytest.param(DEEP.encode(), "application/json", id="deep-nesting"),
    pytest.param(
        json.dumps({"schema_id": "default", "traits": {"a": {"b": 1}} | {"x": [[[[[]]]]]}}).encode(),
        "application/json",
        id="schema-violation-extra-trait",
    ),
    pytest.param(
        json.dumps({"schema_id": "default", "traits": {"email": 5}}).encode(),
        "application/json",
        id="wrong-type-email",
    ),
    pytest.param(
        json.dumps({"schema_id": "default", "traits": {"email": "not-an-email"}}).encode(),
        "application/json",
        id="bad-format",
    ),
    pytest.param(
        json.dumps({"schema_id": "default", "traits": "str"}).encode(),
        "application/json",
        id="traits-not-object",
    ),
    pytest.param(
        json.dumps({"schema_id": 7, "traits": {}}).encode(), "application/json", id="schema-id-type"
    ),
    pytest.param(
        json.dumps({"schema_id": "nope", "traits": {"email": "a@b.test"}}).encode(),
        "application/json",
        id="unknown-schema",
    ),
    pytest.param(json.dumps({**VALID, "state": "banana"}).encode(), "application/json", id="bad-state"),
    pytest.param(
        json.dumps(
            {**VALID, "credentials": {"password": {"config": {"hashed_password": "$nope$"}}}}
        ).encode(),
        "application/json",
        id="unknown-hash",
    ),
    pytest.param(
        json.dumps({**VALID, "credentials": {"password": {"config": {"password": 12}}}}).encode(),
        "application/json",
        id="password-type",
    ),
    pytest.param(
        json.dumps({**VALID, "credentials": {"totp": {}}}).encode(),
        "application/json",
        id="unsupported-credential",
    ),
    pytest.param(
        json.dumps({**VALID, "organization_id": "not-a-uuid"}).encode(), "application/json", id="org-uuid"
    ),
    pytest.param(
        json.dumps({**VALID, "verifiable_addresses": "x"}).encode(), "application/json", id="addresses-type"
    ),
    pytest.param(json.dumps({**VALID, "surprise": 1}).encode(), "application/json", id="unknown-field"),
    pytest.param(
        json.dumps({**VALID, "traits": {"email": "a\u0000@example.test"}}).encode(),
        "application/json",
        id="nul-in-trait",
    ),
    pytest.param(json.dumps(VALID).encode(), "text/plain", id="wrong-content-type"),
    pytest.param(b"x" * (5 * 1024 * 1024), "application/json", id="5mb-body"),
]


@pytest.mark.parametrize(("raw", "ctype"), BAD_BODIES)
def test_create_rejects_bad_input(refusing: httpx.Client, raw: bytes, ctype: str) -> None:
    before = _count(refusing)  # 0 unless an earlier case wrote something (that case fails)
    resp = refusing.post("/admin/identities", content=raw, headers={"Content-Type": ctype})
    _assert_kratos_error(resp)
    assert _count(refusing) == before


def test_every_endpoint_rejects_bad_input(client: httpx.Client) -> None:
    created = client.post("/admin/identities", json={**VALID, "traits": {"email": "keep@example.test"}})
    assert created.status_code == 201
    iid = created.json()["id"]
    before = created.json()
    cases = [
        ("GET", "/admin/identities/not-a-uuid", None, 400),
        ("GET", "/admin/identities/00000000-0000-0000-0000-000000000000", None, 404),
        ("GET", "/admin/identities?page_token=forged", None, 400),
        ("GET", "/admin/identities?page_size=abc", None, 400),
        ("GET", "/admin/identities?ids=zzz", None, 400),
        ("GET", "/admin/identities?ids=" + iid + "&credentials_identifier=a", None, 400),
        ("GET", f"/admin/identities/{iid}?include_credential=bogus", None, 400),
        ("PUT", f"/admin/identities/{iid}", b"{", 400),
        (
            "PUT",
            f"/admin/identities/{iid}",
            json.dumps({"schema_id": "default", "traits": {"email": 1}, "state": "active"}).encode(),
            400,
        ),
        (
            "PUT",
            f"/admin/identities/{iid}",
            json.dumps({"schema_id": "default", "traits": {"email": "a@b.test"}}).encode(),
            400,
        ),
        (
            "PUT",
            "/admin/identities/00000000-0000-0000-0000-000000000000",
            json.dumps({**VALID, "state": "active"}).encode(),
            404,
        ),
        ("PATCH", f"/admin/identities/{iid}", b'{"op": "replace"}', 400),
        ("PATCH", f"/admin/identities/{iid}", b'[{"op": "replace", "path": "/id", "value": "x"}]', 400),
        (
            "PATCH",
            f"/admin/identities/{iid}",
            b'[{"op": "replace", "path": "/credentials", "value": {}}]',
            400,
        ),
        (
            "PATCH",
            f"/admin/identities/{iid}",
            b'[{"op": "replace", "path": "/traits/email", "value": 5}]',
            400,
        ),
        ("PATCH", f"/admin/identities/{iid}", b'[{"op": "remove", "path": "/nonexistent/deep"}]', 400),
        ("PATCH", f"/admin/identities/{iid}", b'[{"op": "frobnicate", "path": "/state"}]', 400),
        (
            "PATCH",
            f"/admin/identities/{iid}",
            b'[{"op": "replace", "path": "/state", "value": "weird"}]',
            400,
        ),
        ("PATCH", "/admin/identities", b'{"identities": 5}', 400),
        ("PATCH", "/admin/identities", json.dumps({"identities": [{"create": VALID}] * 1001}).encode(), 400),
        ("DELETE", "/admin/identities/not-a-uuid", None, 400),
        ("DELETE", "/admin/identities/00000000-0000-0000-0000-000000000000", None, 404),
        ("DELETE", f"/admin/identities/{iid}/credentials/bogus", None, 400),
        ("DELETE", f"/admin/identities/{iid}/credentials/totp", None, 404),
    ]
    for method, path, body, status in cases:
        resp = client.request(method, path, content=body, headers={"Content-Type": "application/json"})
        assert resp.status_code == status, (method, path, resp.status_code, resp.text)
        _assert_kratos_error(resp)
    after = client.get(f"/admin/identities/{iid}").json()
    assert after == before
    assert _count(client) == 1


def test_batch_create_reports_per_item(client: httpx.Client) -> None:
    items = [
        {
            "create": {**VALID, "traits": {"email": "b1@example.test"}},
            "patch_id": "00000000-0000-0000-0000-000000000001",
        },
        {"create": {**VALID, "traits": {"email": 3}}, "patch_id": "00000000-0000-0000-0000-000000000002"},
        {
            "create": {**VALID, "traits": {"email": "b1@example.test"}},
            "patch_id": "00000000-0000-0000-0000-000000000003",
        },
    ]
    resp = client.patch("/admin/identities", json={"identities": items})
    assert resp.status_code == 200, resp.text
    results = resp.json()["identities"]
    assert [r["action"] for r in results] == ["create", "error", "error"]
    assert results[0]["identity"]
    assert results[2]["error"]["code"] == 409
    assert _count(client) == 1


def test_health_and_schemas(sidecar: LiveSidecar) -> None:
    with httpx.Client(timeout=10) as c:
        for base in (sidecar.public_url, sidecar.admin_url, sidecar.admin_url + "/admin"):
            assert c.get(base + "/health/alive").json() == {"status": "ok"}
            assert c.get(base + "/health/ready").json() == {"status": "ok"}
        assert c.get(sidecar.admin_url + "/version").json()["version"].startswith("v")
        schemas = c.get(sidecar.public_url + "/schemas").json()
        assert [s["id"] for s in schemas] == ["default"]
        raw = c.get(sidecar.public_url + "/schemas/ZGVmYXVsdA").json()
        assert raw == schemas[0]["schema"] == c.get(sidecar.public_url + "/schemas/default").json()
        assert c.get(sidecar.public_url + "/schemas/unknown").status_code == 404
        # Admin paths on the public listener: 404 unless serve.public.redirect_admin_paths.
        hidden = c.get(sidecar.public_url + "/admin/identities", follow_redirects=False)
        assert hidden.status_code == 404 and "location" not in hidden.headers

"""``PATCH /admin/identities`` (Kratos' batchPatchIdentities) on SQLite and PostgreSQL: one
transaction per batch, each bad item reported alone in Kratos' response shape, the others stored
whole and usable (their passwords log in)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import bcrypt
import httpx
import pytest

from tests.conftest import make_config
from tests.live import LiveSidecar, live_sidecar


@pytest.fixture
def sidecar(dsn: str) -> Iterator[LiveSidecar]:
    with live_sidecar(make_config(dsn=dsn)) as live:
        yield live


@pytest.fixture
def admin(sidecar: LiveSidecar) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sidecar.admin_url, timeout=60) as c:
        yield c


def _create(email: str, **extra: Any) -> dict[str, Any]:
    return {"schema_id": "default", "traits": {"email": email}, **extra}


def _password(**config: str) -> dict[str, Any]:
    return {"credentials": {"password": {"config": config}}}


def _login(sidecar: LiveSidecar, email: str, password: str) -> int:
    with httpx.Client(base_url=sidecar.public_url, timeout=30) as c:
        flow = c.get("/self-service/login/api").json()
        body = {"method": "password", "identifier": email, "password": password}
        return c.post(f"/self-service/login?flow={flow['id']}", json=body).status_code


def _emails(admin: httpx.Client) -> list[str]:
    listed = admin.get("/admin/identities", params={"page_size": 500}).json()
    return sorted(i["traits"]["email"] for i in listed)


def test_a_batch_reports_each_bad_item_and_stores_the_others(
    admin: httpx.Client, sidecar: LiveSidecar
) -> None:
    assert admin.post("/admin/identities", json=_create("taken@example.test")).status_code == 201
    prehashed = bcrypt.hashpw(b"imported-pw-1", bcrypt.gensalt(4)).decode()
    patch_ids = [str(uuid.uuid4()) for _ in range(9)]
    items: list[Any] = [
        {"create": _create("plain@example.test", **_password(password="plain-pw-1"))},
        {"create": _create("hashed@example.test", **_password(hashed_password=prehashed))},
        {"create": _create("taken@example.test")},  # a stored identity's email
        {"create": {"schema_id": "default", "traits": {"email": 7}}},  # the schema refuses it
        {"create": _create("badhash@example.test", **_password(hashed_password="$nope$x"))},
        {"create": _create("twice@example.test")},
        {"create": _create("twice@example.test")},  # the same email earlier in this batch
        {"delete": {}},  # not a create
        {
            "create": _create(
                "verified@example.test",
                verifiable_addresses=[
                    {
                        "value": "verified@example.test",
                        "via": "email",
                        "verified": True,
                        "status": "completed",
                    }
                ],
            )
        },
    ]
    for item, patch_id in zip(items, patch_ids, strict=True):
        item["patch_id"] = patch_id
    resp = admin.patch("/admin/identities", json={"identities": items})
    assert resp.status_code == 200, resp.text
    results = resp.json()["identities"]
    assert [r["patch_id"] for r in results] == patch_ids
    assert [r["action"] for r in results] == [
        "create",
        "create",
        "error",
        "error",
        "error",
        "create",
        "error",
        "error",
        "create",
    ]
    for r in results:
        if r["action"] == "create":
            assert set(r) == {"action", "patch_id", "identity"}
        else:
            assert set(r) == {"action", "patch_id", "error"}
            assert set(r["error"]) >= {"code", "status", "message"}
    assert [results[i]["error"]["code"] for i in (2, 3, 4, 6, 7)] == [409, 400, 400, 409, 400]

    assert _emails(admin) == sorted(
        [
            "taken@example.test",
            "plain@example.test",
            "hashed@example.test",
            "twice@example.test",
            "verified@example.test",
        ]
    )
    plain = admin.get(f"/admin/identities/{results[0]['identity']}").json()
    assert [a["value"] for a in plain["verifiable_addresses"]] == ["plain@example.test"]
    assert [a["value"] for a in plain["recovery_addresses"]] == ["plain@example.test"]
    stored_hash = admin.get(
        f"/admin/identities/{results[1]['identity']}", params={"include_credential": "password"}
    ).json()["credentials"]["password"]["config"]["hashed_password"]
    assert stored_hash == prehashed  # stored as given (a login re-hashes it to today's parameters)
    # Stored whole: credentials that log in, see above for the addresses.
    assert _login(sidecar, "plain@example.test", "plain-pw-1") == 200
    assert _login(sidecar, "hashed@example.test", "imported-pw-1") == 200
    verified = admin.get(f"/admin/identities/{results[8]['identity']}").json()
    assert verified["verifiable_addresses"][0]["verified"] is True


def test_too_many_plaintext_passwords_refuse_the_batch(admin: httpx.Client) -> None:
    items = [
        {"create": _create(f"p{k}@example.test", **_password(password="plain-pw-1"))} for k in range(201)
    ]
    resp = admin.patch("/admin/identities", json={"identities": items})
    assert resp.status_code == 400, resp.text
    assert "plaintext password is 200" in resp.json()["error"]["reason"]
    assert _emails(admin) == []


def test_overlapping_batches_in_parallel_store_each_email_once(
    admin: httpx.Client, sidecar: LiveSidecar
) -> None:
    """Four batches over the same 60 emails, in different orders, at once: every email once, no
    500 (no deadlock between the batches' row locks), and each email reported created exactly once."""
    emails = [f"o{k:02d}@example.test" for k in range(60)]
    orders = [emails, emails[::-1], emails[30:] + emails[:30], emails[1::2] + emails[::2]]

    def send(order: list[str]) -> httpx.Response:
        with httpx.Client(base_url=sidecar.admin_url, timeout=60) as c:
            return c.patch("/admin/identities", json={"identities": [{"create": _create(e)} for e in order]})

    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(send, orders))
    created: list[str] = []
    for order, resp in zip(orders, responses, strict=True):
        assert resp.status_code == 200, resp.text
        for email, r in zip(order, resp.json()["identities"], strict=True):
            if r["action"] == "create":
                created.append(email)
            else:
                assert r["error"]["code"] == 409, r
    assert sorted(created) == emails
    assert _emails(admin) == emails


def test_plaintext_passwords_of_a_batch_wait_for_hashing_slots_instead_of_overflowing(dsn: str) -> None:
    """One hashing slot and no waiting room (``max_queue: 0``): a single login at a time would
    get through, and 30 plaintext passwords in one batch are hashed one after the other in that
    slot rather than refused with 503."""
    config = make_config(dsn=dsn, hashers={"max_concurrent": 1, "max_queue": 0})
    with live_sidecar(config) as live, httpx.Client(base_url=live.admin_url, timeout=120) as admin:
        items = [
            {"create": _create(f"q{k}@example.test", **_password(password=f"queue-pw-{k}"))}
            for k in range(30)
        ]
        resp = admin.patch("/admin/identities", json={"identities": items})
        assert resp.status_code == 200, resp.text
        assert [r["action"] for r in resp.json()["identities"]] == ["create"] * 30
        assert _login(live, "q29@example.test", "queue-pw-29") == 200

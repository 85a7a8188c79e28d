"""The surface landed on 2026-12-06, attacked from outside against ``sidecar serve``: batch import
(hostile pre-hashed passwords, duplicates, oversized batches, malformed items), the session-token
exchange (missing, guessed, over-long and replayed codes) and client-supplied request ids."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.ops.probes import (
    PASSWORD,
    Recorder,
    api,
    login,
    probed_sidecar,
    raw_request,
    recording_upstream,
    status_of,
)
from tests.ops.serve import Proc

BCRYPT_31 = "$2a$31$" + "a" * 53
ARGON2_4GIB = "$argon2id$v=19$m=4194304,t=1,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
PBKDF2_1E9 = "$pbkdf2-sha256$i=1000000000,l=32$c2FsdA$aGFzaA"
SHA512_CRYPT_1E9 = "$sha512-crypt$rounds=999999999$saltsalt$" + "a" * 86


@pytest.fixture(scope="module")
def upstream() -> Iterator[Recorder]:
    with recording_upstream() as recorder:
        yield recorder


@pytest.fixture(scope="module")
def proc(tmp_path_factory: pytest.TempPathFactory, upstream: Recorder) -> Iterator[Proc]:
    with probed_sidecar(tmp_path_factory.mktemp("surface"), upstream) as running:
        yield running


def _email(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}@example.com"


def _create(email: str, **credentials: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"schema_id": "default", "traits": {"email": email}}
    if credentials:
        body["credentials"] = credentials
    return body


def _batch(proc: Proc, items: list[Any]) -> httpx.Response:
    return httpx.patch(f"{proc.admin_url}/admin/identities", json={"identities": items}, timeout=60)


def _owner(proc: Proc, email: str) -> list[dict[str, Any]]:
    found = httpx.get(
        f"{proc.admin_url}/admin/identities", params={"credentials_identifier": email}, timeout=10
    )
    assert found.status_code == 200, found.text
    rows: list[dict[str, Any]] = found.json()
    return rows


@pytest.mark.parametrize(
    ("hashed", "reason"),
    [
        pytest.param(BCRYPT_31, "cost=31", id="bcrypt-cost-31"),
        pytest.param(ARGON2_4GIB, "m=4194304", id="argon2-4gib"),
        pytest.param(PBKDF2_1E9, "i=1000000000", id="pbkdf2-1e9"),
        pytest.param(SHA512_CRYPT_1E9, "rounds=999999999", id="sha512-crypt-1e9"),
    ],
)
def test_a_hostile_hash_in_a_batch_is_refused_alone(proc: Proc, hashed: str, reason: str) -> None:
    good, bad = _email("good"), _email("bad")
    hostile = {"password": {"config": {"hashed_password": hashed}}}
    answer = _batch(proc, [{"create": _create(good)}, {"create": _create(bad, **hostile)}])
    assert answer.status_code == 200, answer.text
    first, second = answer.json()["identities"]
    assert first["action"] == "create" and uuid.UUID(first["identity"])
    assert second["action"] == "error" and second["error"]["code"] == 400, second
    assert reason in str(second["error"]), second
    assert len(_owner(proc, good)) == 1
    assert _owner(proc, bad) == []  # nothing half-written for the refused item


def test_duplicates_in_one_batch_and_against_a_stored_row(proc: Proc) -> None:
    stored, twice = _email("stored"), _email("twice")
    first = _batch(proc, [{"create": _create(stored)}])
    assert first.json()["identities"][0]["action"] == "create"
    answer = _batch(
        proc, [{"create": _create(twice)}, {"create": _create(twice)}, {"create": _create(stored)}]
    )
    assert answer.status_code == 200, answer.text
    actions = [(r["action"], r.get("error", {}).get("code")) for r in answer.json()["identities"]]
    assert actions == [("create", None), ("error", 409), ("error", 409)]
    assert len(_owner(proc, twice)) == 1 and len(_owner(proc, stored)) == 1


def test_a_batch_over_1000_items_is_a_400_and_writes_nothing(proc: Proc) -> None:
    tag = uuid.uuid4().hex[:8]
    items = [{"create": _create(f"big-{tag}-{i}@example.com")} for i in range(1001)]
    answer = _batch(proc, items)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == 400
    assert _owner(proc, f"big-{tag}-0@example.com") == []


@pytest.mark.parametrize(
    "item",
    [
        pytest.param(None, id="null"),
        pytest.param("text", id="string"),
        pytest.param([1], id="list"),
        pytest.param({"create": None}, id="create-null"),
        pytest.param({"create": "x"}, id="create-string"),
        pytest.param({"create": {"traits": []}}, id="traits-list"),
        pytest.param({"create": {"schema_id": 1, "traits": {}}}, id="schema-number"),
        pytest.param({"patch_id": 7, "create": {}}, id="patch-id-number"),
        pytest.param({"patch_id": {"a": 1}, "create": {}}, id="patch-id-object"),
    ],
)
def test_a_malformed_batch_item_is_a_per_item_400(proc: Proc, item: Any) -> None:
    good = _email("beside")
    answer = _batch(proc, [item, {"create": _create(good)}])
    assert answer.status_code == 200, answer.text
    bad, ok = answer.json()["identities"]
    assert bad["action"] == "error" and bad["error"]["code"] == 400, bad
    assert ok["action"] == "create"


@pytest.mark.parametrize(
    "body",
    [None, [], "x", {"identities": None}, {"identities": {}}, {"identities": "x"}],
    ids=["null", "list", "string", "identities-null", "identities-object", "identities-string"],
)
def test_a_malformed_batch_body_is_a_400(proc: Proc, body: Any) -> None:
    answer = httpx.patch(f"{proc.admin_url}/admin/identities", json=body, timeout=10)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == 400


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?init_code=",
        "?return_to_code=x",
        "?init_code=x",
        "?init_code=a&return_to_code=",
        "?init_code[]=a&return_to_code[]=b",
    ],
)
def test_token_exchange_without_both_codes_is_a_400(proc: Proc, query: str) -> None:
    answer = httpx.get(f"{proc.public_url}/.auth/sessions/token-exchange{query}", timeout=10)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["code"] == 400


@pytest.mark.parametrize(
    ("init_code", "return_to_code"),
    [
        ("a" * 64, "b" * 64),
        ("a" * 4_000, "b" * 64),
        ("%00" * 64, "\r\n" * 32),
        ("é" * 64, "ü" * 64),
    ],
    ids=["guessed", "over-long", "control", "unicode"],
)
def test_guessed_exchange_codes_are_a_404_never_a_500(
    proc: Proc, init_code: str, return_to_code: str
) -> None:
    answer = httpx.get(
        f"{proc.public_url}/.auth/sessions/token-exchange",
        params={"init_code": init_code, "return_to_code": return_to_code},
        timeout=10,
    )
    assert answer.status_code == 404, answer.text
    assert answer.json()["error"]["code"] == 404
    assert "no-store" in answer.headers.get("cache-control", "")


@pytest.mark.parametrize("flow", ["login", "registration"])
@pytest.mark.parametrize("value", ["true", "1", "yes"])
def test_an_exchange_code_on_a_flow_without_oidc_is_harmless(proc: Proc, flow: str, value: str) -> None:
    """A password flow asked for an exchange code: the code never yields a session, and the flow
    still signs in by password (no 500, no session handed to the code's holder)."""
    client = api(proc)
    email = _email("exchange")
    if flow == "login":
        assert _batch(proc, [{"create": _create(email, password={"config": {"password": PASSWORD}})}])
    created = client.get(f"/self-service/{flow}/api", params={"return_session_token_exchange_code": value})
    assert created.status_code == 200, created.text
    init_code = created.json().get("session_token_exchange_code")
    if flow == "login":
        signed_in = login(client, email)
    else:
        signed_in = client.post(
            f"/self-service/registration?flow={created.json()['id']}",
            json={"method": "password", "traits": {"email": email}, "password": PASSWORD},
        )
    assert signed_in.status_code == 200, signed_in.text
    if init_code:
        answer = client.get(
            "/sessions/token-exchange", params={"init_code": init_code, "return_to_code": "x"}
        )
        assert answer.status_code == 404, answer.text


@pytest.mark.parametrize(
    "value",
    [b"abc\rdef", b"a" * 10_240, b"<script>", b'a"b', b"a b", b"\xff\xfe"],
    ids=["cr", "10kib", "html", "quote", "space", "latin1"],
)
def test_a_hostile_request_id_is_replaced_never_echoed(proc: Proc, upstream: Recorder, value: bytes) -> None:
    marker = uuid.uuid4().hex
    port = int(proc.public_url.rsplit(":", 1)[1])
    answer = raw_request(port, b"GET /" + marker.encode() + b" HTTP/1.1\r\nX-Request-ID: " + value)
    assert status_of(answer) in (200, 400, 431), answer[:300]
    head = answer.split(b"\r\n\r\n", 1)[0]
    assert value not in head
    for line in head.split(b"\r\n")[1:]:
        name, _, echoed = line.partition(b":")
        if name.lower() == b"x-request-id":
            assert len(echoed.strip()) == 32 and echoed.strip().isalnum()
    if status_of(answer) == 200:
        sent = dict(upstream.headers_of(b"/" + marker.encode()))
        assert sent["x-request-id"] != value and len(sent["x-request-id"]) == 32
    assert value.decode("latin-1") not in proc.log()

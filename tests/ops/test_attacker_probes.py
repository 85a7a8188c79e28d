"""Issue 13's attacker findings, each driven from outside against ``sidecar serve`` over HTTP.

Two real processes in front of a recording upstream: ``default`` runs the defaults (JSON logs,
loopback trusted, CORS switched on with no origin listed, recovery and verification by code);
``strict`` runs text logs, ``trusted_proxies: []``, the admin redirect switched on and a 4 KiB
request-line limit. Raw sockets where the shape of the request is the point. The module runs
once per HTTP server (``serve.<listener>.server``): the same probes, the same answers, except
the raw ``#`` that granian's parser drops with what follows it (see the tests of section 7).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sidecar.config.loader import deep_merge
from tests.ops.probes import (
    PASSWORD,
    Recorder,
    api,
    identities,
    login,
    message_ids,
    probed_sidecar,
    raw_request,
    recording_upstream,
    register,
    status_of,
)
from tests.ops.serve import SERVERS, Proc, base_config, clean_env, on_server, ports, write_config

SMTP_NOWHERE = {"smtp": {"connection_uri": "smtp://127.0.0.1:9/?disable_starttls=true"}}


@pytest.fixture(scope="module")
def upstream() -> Iterator[Recorder]:
    with recording_upstream() as recorder:
        yield recorder


@pytest.fixture(scope="module", params=SERVERS)
def server(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def default(tmp_path_factory: pytest.TempPathFactory, upstream: Recorder, server: str) -> Iterator[Proc]:
    tmp = tmp_path_factory.mktemp("default")
    with probed_sidecar(
        tmp,
        upstream,
        serve=deep_merge(on_server(server)["serve"], {"public": {"cors": {"enabled": True}}}),
        selfservice={
            "flows": {"recovery": {"enabled": True}, "verification": {"enabled": True}},
        },
        courier=SMTP_NOWHERE,
    ) as proc:
        yield proc


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory, upstream: Recorder, server: str) -> Iterator[Proc]:
    tmp = tmp_path_factory.mktemp("strict")
    strict_public = {"trusted_proxies": [], "redirect_admin_paths": True, "max_request_line_size": "4KiB"}
    with probed_sidecar(
        tmp,
        upstream,
        serve=deep_merge(on_server(server)["serve"], {"public": strict_public}),
        log={"format": "text"},
    ) as proc:
        yield proc


def _email(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}@example.test"


def _messages(proc: Proc) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = httpx.get(
        f"{proc.admin_url}/admin/courier/messages?page_size=500", timeout=10
    ).json()
    return found


def _identity_emails(proc: Proc) -> list[str]:
    return [i["traits"]["email"] for i in identities(proc)]


# --- 1. mail goes to the stored address, never to what was typed --------------------------------


@pytest.mark.parametrize("flow", ["recovery", "verification"])
def test_challenge_mail_goes_to_the_stored_address(default: Proc, flow: str) -> None:
    local = f"carol{flow[:3]}"
    with api(default) as c:
        assert register(c, f"{local}@example.test").status_code == 200
        before = {m["id"] for m in _messages(default)}
        look_alikes = [
            f"{local}@example.te\u017ft",  # LATIN SMALL LETTER LONG S, NFKC "s"
            "\uff43" + f"{local[1:]}@example.test",  # FULLWIDTH c
            f"{local.upper()}@EXAMPLE.test.",
        ]
        for typed in look_alikes:
            flow_json = c.get(f"/self-service/{flow}/api").json()
            r = c.post(
                f"/self-service/{flow}?flow={flow_json['id']}", json={"method": "code", "email": typed}
            )
            assert r.status_code == 200, r.text
            assert r.json()["state"] == "sent_email"
    sent = [m for m in _messages(default) if m["id"] not in before]
    assert len(sent) == len(look_alikes)
    assert {m["recipient"] for m in sent} == {f"{local}@example.test"}


# --- 2. CR/LF in an email; registration all or nothing ---------------------------------------------


@pytest.mark.parametrize(
    "email",
    [
        pytest.param("bob@example.test\r\nBcc: victim@evil.test", id="crlf-header"),
        pytest.param("bob@example.test\n", id="trailing-lf"),
        pytest.param("bo\rb@example.test", id="cr-inside"),
    ],
)
def test_crlf_in_a_registration_email_is_a_400_and_writes_nothing(default: Proc, email: str) -> None:
    count = len(identities(default))
    messages = len(_messages(default))
    with api(default) as c:
        r = register(c, email)
    assert r.status_code == 400, r.text
    email_node = next(n for n in r.json()["ui"]["nodes"] if n["attributes"].get("name") == "traits.email")
    assert email_node["messages"], r.json()
    assert len(identities(default)) == count
    assert len(_messages(default)) == messages


def test_crlf_email_is_refused_on_every_write_path(default: Proc) -> None:
    """Admin create, admin update and a settings profile change refuse it too."""
    bad = "eve@example.test\r\nBcc: victim@evil.test"
    count = len(identities(default))
    admin = default.admin_url
    created = httpx.post(
        f"{admin}/admin/identities", json={"schema_id": "default", "traits": {"email": bad}}, timeout=10
    )
    assert created.status_code == 400 and len(identities(default)) == count
    email = _email("settings")
    with api(default) as c:
        signed_up = register(c, email).json()
        identity_id, token = signed_up["identity"]["id"], signed_up["session_token"]
        update = {"schema_id": "default", "state": "active", "traits": {"email": bad}}
        assert (
            httpx.put(f"{admin}/admin/identities/{identity_id}", json=update, timeout=10).status_code == 400
        )
        flow = c.get("/self-service/settings/api", headers={"X-Session-Token": token}).json()
        r = c.post(
            f"/self-service/settings?flow={flow['id']}",
            json={"method": "profile", "traits": {"email": bad}},
            headers={"X-Session-Token": token},
        )
        assert r.status_code == 400, r.text
    stored = httpx.get(f"{admin}/admin/identities/{identity_id}", timeout=10).json()
    assert stored["traits"]["email"] == email
    assert [a["value"] for a in stored["verifiable_addresses"]] == [email]


def test_registration_whose_hook_fails_leaves_nothing_behind(tmp_path: Path, upstream: Recorder) -> None:
    """The verification hook's courier fails after the identity is written (a template that cannot
    render): the answer is an error, and the identity and its session are gone."""
    templates = tmp_path / "templates" / "verification_code_valid"
    templates.mkdir(parents=True)
    (templates / "email.subject.txt").write_text("{{ no_such_variable }}")
    with probed_sidecar(
        tmp_path,
        upstream,
        selfservice={"flows": {"verification": {"enabled": True}}},
        courier={**SMTP_NOWHERE, "template_override_path": str(tmp_path / "templates")},
    ) as proc:
        with api(proc) as c:
            r = register(c, "hooked@example.test")
            assert r.status_code == 400, r.text
            assert "session_token" not in r.json()
            assert identities(proc) == []
            # The address is free again: nothing half-written holds it.
            assert login(c, "hooked@example.test").status_code == 400
        assert httpx.get(f"{proc.admin_url}/admin/sessions", timeout=10).json() == []


# --- 3. look-alike identifiers are one account; X-User-Email is its canonical form -------------------


@pytest.mark.parametrize(
    ("second", "expected"),
    [
        pytest.param("{local}@example.test\u200b", "refused", id="zero-width-space"),
        pytest.param("{local}@example.test.", "taken", id="trailing-dot"),
        pytest.param("{local}@EXAMPLE.test", "taken", id="case"),
        pytest.param("\uff41{rest}@example.test", "taken", id="fullwidth"),
        pytest.param("{local}@x@example.test", "refused", id="two-at"),
        pytest.param("\u202e{local}@example.test", "refused", id="bidi-override"),
        pytest.param("{local}@example.test\u2066", "refused", id="bidi-isolate"),
    ],
)
def test_look_alikes_make_no_second_account(default: Proc, second: str, expected: str) -> None:
    local = "a" + uuid.uuid4().hex[:8]
    with api(default) as c:
        assert register(c, f"{local}@example.test").status_code == 200
        count = len(identities(default))
        r = register(c, second.format(local=local, rest=local[1:]))
    assert r.status_code == 400, r.text
    ids = message_ids(r.json())
    assert (4000007 in ids) if expected == "taken" else (4000007 not in ids and ids), ids
    assert len(identities(default)) == count


def test_idn_and_punycode_are_one_account_and_the_header_is_ascii(default: Proc, upstream: Recorder) -> None:
    local = "i" + uuid.uuid4().hex[:8]
    with api(default) as c:
        first = register(c, f"{local}@EX\u00c4MPLE.test")
        assert first.status_code == 200, first.text
        again = register(c, f"{local}@xn--exmple-cua.test")
        assert again.status_code == 400 and 4000007 in message_ids(again.json())
        signed_in = login(c, f"{local}@ex\u00e4mple.test.")
        assert signed_in.status_code == 200, signed_in.text
        token = signed_in.json()["session_token"]
    target = f"/whoami-{local}".encode()
    r = httpx.get(f"{default.public_url}{target.decode()}", headers={"X-Session-Token": token}, timeout=10)
    assert r.status_code == 200
    header = dict(upstream.headers_of(target))["x-user-email"]
    assert header == f"{local}@xn--exmple-cua.test".encode()


# --- 4. JSON numbers with thousands of digits: 400 in every body parser -------------------------------


BIG = "9" * 5000


@pytest.mark.parametrize("number", [BIG, f"-{BIG}", "1e999999", "NaN", "Infinity"])
def test_hostile_json_numbers_are_400(default: Proc, number: str) -> None:
    json_ct = {"Content-Type": "application/json"}
    with api(default) as c:
        for kind in ("login", "registration", "recovery", "verification"):
            flow = c.get(f"/self-service/{kind}/api").json()
            body = f'{{"method": "password", "identifier": {number}, "traits": {{"n": {number}}}}}'
            r = c.post(f"/self-service/{kind}?flow={flow['id']}", content=body, headers=json_ct)
            assert r.status_code == 400, (kind, r.status_code, r.text[:300])
    admin = default.admin_url
    create = (
        f'{{"schema_id": "default", "traits": {{"email": "n@example.test"}}, "metadata_public": {number}}}'
    )
    assert httpx.post(f"{admin}/admin/identities", content=create, headers=json_ct).status_code == 400
    batch = f'{{"identities": [{{"create": {create}}}]}}'
    assert httpx.patch(f"{admin}/admin/identities", content=batch, headers=json_ct).status_code == 400
    with api(default) as c:
        someone = register(c, _email("numbers")).json()["identity"]["id"]
    patch = f'[{{"op": "replace", "path": "/metadata_public", "value": {number}}}]'
    assert (
        httpx.patch(f"{admin}/admin/identities/{someone}", content=patch, headers=json_ct).status_code == 400
    )
    recovery = f'{{"identity_id": "{someone}", "expires_in": {number}}}'
    assert httpx.post(f"{admin}/admin/recovery/code", content=recovery, headers=json_ct).status_code == 400


# --- 5. CORS: no origin unless listed; "*" with credentials refused at load ---------------------------


def test_cors_without_an_origin_list_allows_no_origin(default: Proc) -> None:
    with api(default) as c:
        r = register(c, _email("cors"))
        token = r.json()["session_token"]
        for origin in ("https://evil.example", "null", default.public_url):
            answer = c.get("/sessions/whoami", headers={"Origin": origin, "X-Session-Token": token})
            assert answer.status_code == 200
            # Without Access-Control-Allow-Origin the browser hands the page nothing.
            assert "access-control-allow-origin" not in answer.headers
            pre = c.options(
                "/sessions/whoami",
                headers={"Origin": origin, "Access-Control-Request-Method": "GET"},
            )
            assert "access-control-allow-origin" not in pre.headers


@pytest.mark.parametrize("command", ["config check", "serve"])
def test_cors_wildcard_with_credentials_is_refused_at_load(tmp_path: Path, command: str) -> None:
    import subprocess
    import sys

    public_port, admin_port = ports()
    config = deep_merge(
        base_config(tmp_path, public_port, admin_port),
        {"serve": {"public": {"cors": {"enabled": True, "allowed_origins": ["*"]}}}},
    )
    path = write_config(tmp_path / "cors.yaml", config)
    argv = [
        sys.executable,
        "-m",
        "sidecar",
        *command.split(),
        *(["-c"] if command == "serve" else []),
        str(path),
    ]
    done = subprocess.run(argv, cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "serve.public.cors.allowed_origins" in done.stdout + done.stderr


# --- 6. trusted_proxies: [] trusts nobody; the default is loopback -----------------------------------


def test_empty_trusted_proxies_trusts_nobody(strict: Proc, default: Proc, upstream: Recorder) -> None:
    spoof = {
        "X-Forwarded-For": "203.0.113.66",
        "X-Forwarded-Host": "evil.example",
        "X-Request-ID": "forged-1",
    }
    httpx.get(f"{strict.public_url}/xff-strict", headers=spoof, timeout=10)
    seen = dict(upstream.headers_of(b"/xff-strict"))
    assert seen["x-forwarded-for"] == b"127.0.0.1"
    assert seen["x-forwarded-host"] != b"evil.example"
    assert seen["x-request-id"] != b"forged-1"
    # Absent key: loopback is trusted (the documented default), so the hop is kept.
    httpx.get(f"{default.public_url}/xff-default", headers=spoof, timeout=10)
    assert dict(upstream.headers_of(b"/xff-default"))["x-forwarded-for"] == b"203.0.113.66, 127.0.0.1"


# --- 7. request targets: invalid UTF-8, raw '#', request lines over the limit -------------------------


@pytest.mark.parametrize(
    ("target", "status"),
    [
        pytest.param(b"/probe-overlong%C0%AF", 400, id="overlong-slash"),
        pytest.param(b"/probe-ff%FF", 400, id="not-utf8"),
        pytest.param(b"/probe-surrogate%ED%A0%80", 400, id="surrogate"),
        pytest.param(b"/probe-long/" + b"a" * 16 * 1024, 414, id="16KiB-line"),
        pytest.param(b"/.auth/self-service/%FF", 400, id="under-the-prefix"),
    ],
)
def test_bad_request_targets_are_refused_and_never_forwarded(
    default: Proc, upstream: Recorder, target: bytes, status: int
) -> None:
    port = int(default.public_url.rsplit(":", 1)[1])
    answer = raw_request(port, b"GET " + target + b" HTTP/1.1")
    assert status_of(answer) == status, answer[:200]
    assert not [t for t in upstream.targets() if t.startswith(target.split(b"#")[0][:20])]


@pytest.mark.parametrize(("size", "granian_status"), [(70 * 1024, 414), (512 * 1024, 431)])
def test_lines_past_the_parsers_own_limits_are_refused(
    default: Proc, upstream: Recorder, server: str, size: int, granian_status: int
) -> None:
    """granian's parser refuses on its own, before any app: 414 for a target over 65,534 bytes,
    431 for a request head over its ~408 KiB buffer. uvicorn's guard: 414 for both."""
    port = int(default.public_url.rsplit(":", 1)[1])
    target = b"/line-huge-" + server.encode() + b"/" + b"g" * size
    answer = raw_request(port, b"GET " + target + b" HTTP/1.1")
    assert status_of(answer) == (414 if server == "uvicorn" else granian_status), answer[:200]
    assert not [t for t in upstream.targets() if t.startswith(b"/line-huge-")]


def test_a_raw_hash_is_refused_or_dropped_with_what_follows(
    default: Proc, upstream: Recorder, server: str
) -> None:
    """uvicorn refuses a raw '#' (400). granian cannot: its parser (hyper, the ``http`` crate)
    drops the fragment before the app runs, leaving no trace in the scope. What it can promise,
    and this checks: the rules and the upstream see the same path, never what followed '#'."""
    port = int(default.public_url.rsplit(":", 1)[1])
    path = b"/probe-hash-" + server.encode()
    answer = raw_request(port, b"GET " + path + b"#/../admin HTTP/1.1")
    forwarded = [t for t in upstream.targets() if t.startswith(path)]
    if server == "uvicorn":
        assert status_of(answer) == 400, answer[:200]
        assert forwarded == []
    else:
        assert status_of(answer) == 200, answer[:200]
        assert forwarded == [path]


def test_a_request_pipelined_behind_a_refused_one_never_runs(
    default: Proc, upstream: Recorder, server: str
) -> None:
    port = int(default.public_url.rsplit(":", 1)[1])
    smuggled = b"/pipelined-after-refusal-" + server.encode()
    refused_targets = [b"/pipe%FF", b"/pipe/" + b"e" * 9000, b"/pipe/" + b"f" * 70000]
    if server == "uvicorn":
        refused_targets.append(b"/pipe#x")  # granian does not refuse it: see the test above
    for refused in refused_targets:
        head = b"GET " + refused + b" HTTP/1.1\r\nHost: a\r\n\r\nGET " + smuggled + b" HTTP/1.1"
        assert status_of(raw_request(port, head)) in (400, 414)
    upgrade = b"GET /ws%FF HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13"
    assert status_of(raw_request(port, upgrade + b"\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==")) == 400
    assert smuggled not in upstream.targets()
    assert not [t for t in upstream.targets() if t.startswith(b"/ws")]


def test_decision_endpoints_refuse_the_same_paths(default: Proc) -> None:
    for uri in ("/x%C0%AF", "/x%FF", "/x/%2e%2e%2fadmin"):
        r = httpx.get(
            f"{default.public_url}/.auth/authz/forward-auth",
            headers={
                "X-Forwarded-Method": "GET",
                "X-Forwarded-Proto": "http",
                "X-Forwarded-Host": "app.test",
                "X-Forwarded-Uri": uri,
            },
            timeout=10,
        )
        assert r.status_code == 400, (uri, r.status_code)


def test_request_line_limit_is_configurable(strict: Proc, default: Proc, upstream: Recorder) -> None:
    strict_port = int(strict.public_url.rsplit(":", 1)[1])
    default_port = int(default.public_url.rsplit(":", 1)[1])
    five_k = b"/line-5k/" + b"b" * 5 * 1024
    assert status_of(raw_request(strict_port, b"GET " + five_k + b" HTTP/1.1")) == 414
    assert status_of(raw_request(default_port, b"GET " + five_k + b" HTTP/1.1")) == 200
    assert five_k in upstream.targets()
    seven_k = b"/line-7k/" + b"c" * 7 * 1024  # under the default 8 KiB
    assert status_of(raw_request(default_port, b"GET " + seven_k + b" HTTP/1.1")) == 200
    admin_port = int(default.admin_url.rsplit(":", 1)[1])
    assert status_of(raw_request(admin_port, b"GET /admin/identities?x=" + b"d" * 9000 + b" HTTP/1.1")) == 414
    # Valid UTF-8 escapes pass, normalised, to the upstream.
    assert status_of(raw_request(default_port, b"GET /caf%c3%a9 HTTP/1.1")) == 200
    assert b"/caf%C3%A9" in upstream.targets()


# --- 8. log lines cannot be forged ---------------------------------------------------------------


FORGE = b"/log%0d%0a2026-01-01T00:00:00%20INFO%20%20%20%20sidecar:%20FORGED-LINE"


@pytest.mark.parametrize("which", ["strict", "default"])
def test_control_characters_are_escaped_in_every_log_format(
    request: pytest.FixtureRequest, which: str, server: str
) -> None:
    proc: Proc = request.getfixturevalue(which)  # under ``server`` (requested above to parametrize)
    port = int(proc.public_url.rsplit(":", 1)[1])
    raw_request(port, b"GET " + FORGE + b" HTTP/1.1")
    raw_request(port, b"GET /log-sep%E2%80%A8FORGED-SEPARATOR%E2%80%AE HTTP/1.1")
    raw_request(port, b"GET /log-bs%5c%0d%0aFORGED-BACKSLASH HTTP/1.1")
    lines = proc.wait_log("FORGED-BACKSLASH").splitlines()
    assert not [line for line in lines if line.lstrip().startswith(("2026-01-01", "FORGED"))]
    assert not [line for line in lines if "\u2028" in line or "\u202e" in line]
    if which == "strict":
        assert any("FORGED-LINE" in line and "\\x0d\\x0a" in line for line in lines), lines[-5:]
    else:
        for line in lines:
            if line.startswith("{"):
                json.loads(line)  # every record is one JSON document
        assert any("FORGED-LINE" in line for line in lines)


# --- 9. admin paths on the public listener --------------------------------------------------------------


@pytest.mark.parametrize("path", ["/.auth/admin/identities", "/.auth/identities", "/.auth/admin/sessions"])
def test_admin_paths_are_404_on_the_public_listener(default: Proc, strict: Proc, path: str) -> None:
    hidden = httpx.get(default.public_url + path, timeout=10, follow_redirects=False)
    assert hidden.status_code == 404 and "location" not in hidden.headers
    assert default.admin_url.split("//")[1] not in hidden.text
    # serve.public.redirect_admin_paths: Kratos' 307 to the admin listener, by choice.
    shown = httpx.get(strict.public_url + path, timeout=10, follow_redirects=False)
    assert shown.status_code == 307 and shown.headers["location"].startswith(strict.admin_url)


def test_a_password_still_signs_in(default: Proc) -> None:
    """The hardening leaves the plain path alone."""
    email = _email("plain")
    with api(default) as c:
        assert register(c, email).status_code == 200
        assert login(c, email.upper(), PASSWORD).status_code == 200

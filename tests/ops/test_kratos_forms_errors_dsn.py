"""Kratos parity through ``sidecar serve`` (issue 16, section 4): form decoding, error texts and
SQLite DSNs, each checked against Kratos v25.4.0's own source (the file is named at each test)."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.ops.serve import base_config, clean_env, migrate, ports, running, serve_argv, write_config
from tests.schemas import person_schema

SCHEMA = person_schema(
    email_for=(),
    closed=True,
    website={"type": "string", "format": "uri", "minLength": 10},
    age={"type": "integer", "minimum": 1},
    newsletter={"type": "boolean"},
    name={
        "type": "object",
        "properties": {"first": {"type": "string", "minLength": 2}, "last": {"type": "string"}},
    },
)
PASSWORD = "a-long-parity-passphrase"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Recovery on (code), verification off: both texts of section 4 from one process."""
    tmp = tmp_path_factory.mktemp("parity")
    (tmp / "person.schema.json").write_text(json.dumps(SCHEMA))
    public_port, admin_port = ports()
    cfg = base_config(
        tmp,
        public_port,
        admin_port,
        identity={
            "default_schema_id": "person",
            "schemas": [{"id": "person", "url": f"file://{tmp}/person.schema.json"}],
        },
    )
    cfg["selfservice"]["flows"] = {"recovery": {"enabled": True, "use": "code"}}
    cfg["selfservice"]["methods"] = {"code": {"enabled": True}}
    cfg["courier"] = {"smtp": {"connection_uri": "smtp://127.0.0.1:1/"}}
    path = write_config(tmp / "cfg.yaml", cfg)
    migrate(path, tmp)
    with running(serve_argv(path), cwd=tmp, public_port=public_port, admin_port=admin_port) as proc:
        yield proc


def _register_form(proc: Any, fields: dict[str, str]) -> httpx.Response:
    with httpx.Client(base_url=proc.public_url, timeout=10) as c:
        flow = c.get("/.auth/self-service/registration/api").json()
        return c.post(
            f"/.auth/self-service/registration?flow={flow['id']}",
            data={"method": "password", "password": PASSWORD, **fields},
            headers={"Accept": "application/json"},
        )


def test_empty_optional_form_fields_are_absent(server: Any) -> None:
    """ory/x decoderx/http.go (decodeURLValues): an empty string is dropped, so the optional
    ``website`` (minLength 10, format uri) and ``age`` cannot fail, and are not stored."""
    r = _register_form(
        server,
        {
            "traits.email": "empty@example.test",
            "traits.website": "",
            "traits.age": "",
            "traits.newsletter": "",
            "traits.name.first": "",
            "traits.name.last": "",
        },
    )
    assert r.status_code == 200, r.text
    assert r.json()["identity"]["traits"] == {"email": "empty@example.test"}


def test_form_values_are_typed_by_the_schema(server: Any) -> None:
    """decodeURLValues parses numbers and booleans (Go's ParseBool; a checkbox's hidden ``false``
    before the checked ``true``: the last value counts) and keeps only the schema's paths."""
    with httpx.Client(base_url=server.public_url, timeout=10) as c:
        flow = c.get("/.auth/self-service/registration/api").json()
        body = (
            "method=password&password=" + PASSWORD + "&traits.email=typed%40example.test&traits.age=42"
            "&traits.newsletter=false&traits.newsletter=true&traits.name.first=Ada&traits.unknown=x"
        )
        r = c.post(
            f"/.auth/self-service/registration?flow={flow['id']}",
            content=body,
            headers={"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
        )
    assert r.status_code == 200, r.text
    assert r.json()["identity"]["traits"] == {
        "email": "typed@example.test",
        "age": 42,
        "newsletter": True,
        "name": {"first": "Ada"},
    }


def test_a_filled_optional_field_is_still_validated(server: Any) -> None:
    r = _register_form(server, {"traits.email": "short@example.test", "traits.website": "http://x"})
    assert r.status_code == 400
    nodes = {n["attributes"]["name"]: n for n in r.json()["ui"]["nodes"]}
    assert nodes["traits.website"]["messages"], r.text


def test_a_number_that_does_not_parse_is_refused_by_the_schema(server: Any) -> None:
    """ParseErrorIgnoreConversionErrors (the decoder's default): the text goes to the schema."""
    r = _register_form(server, {"traits.email": "nan@example.test", "traits.age": "old"})
    assert r.status_code == 400
    nodes = {n["attributes"]["name"]: n for n in r.json()["ui"]["nodes"]}
    assert nodes["traits.age"]["messages"], r.text


def test_json_traits_are_kept_as_sent(server: Any) -> None:
    """JSON bodies are not flattened form values: an empty string stays and is validated."""
    with httpx.Client(base_url=server.public_url, timeout=10) as c:
        flow = c.get("/.auth/self-service/registration/api").json()
        r = c.post(
            f"/.auth/self-service/registration?flow={flow['id']}",
            json={
                "method": "password",
                "password": PASSWORD,
                "traits": {"email": "json@example.test", "website": ""},
            },
        )
    assert r.status_code == 400
    nodes = {n["attributes"]["name"]: n for n in r.json()["ui"]["nodes"]}
    assert nodes["traits.website"]["messages"]


def test_settings_form_clears_an_optional_trait(server: Any) -> None:
    """The same decoder runs on settings (profile): emptying a field removes the trait."""
    r = _register_form(
        server, {"traits.email": "settings@example.test", "traits.website": "https://example.test/me"}
    )
    token = r.json()["session_token"]
    with httpx.Client(base_url=server.public_url, timeout=10, headers={"X-Session-Token": token}) as c:
        flow = c.get("/.auth/self-service/settings/api").json()
        r = c.post(
            f"/.auth/self-service/settings?flow={flow['id']}",
            data={"method": "profile", "traits.email": "settings@example.test", "traits.website": ""},
            headers={"Accept": "application/json"},
        )
    assert r.status_code == 200, r.text
    assert r.json()["identity"]["traits"] == {"email": "settings@example.test"}


def _error(r: httpx.Response) -> dict[str, Any]:
    error: dict[str, Any] = r.json()["error"]
    error.pop("request", None)
    return error


def test_disabled_verification_answers_kratos_text(server: Any) -> None:
    """selfservice/flow/verification/handler.go: herodot.ErrBadRequest with this reason."""
    for path in (
        "/.auth/self-service/verification/api",
        f"/.auth/self-service/verification/flows?id={uuid.uuid4()}",
    ):
        r = httpx.get(server.public_url + path, headers={"Accept": "application/json"}, timeout=10)
        assert r.status_code == 400
        assert _error(r) == {
            "code": 400,
            "status": "Bad Request",
            "message": "The request was malformed or contained invalid parameters",
            "reason": "Verification is not allowed because it was disabled.",
        }


@pytest.mark.parametrize("kind", ["login", "registration", "settings", "recovery"])
def test_unknown_flow_id_is_kratos_not_found(server: Any, kind: str) -> None:
    """The persisters answer sqlcon.ErrNoRows (oryx/sqlcon/error.go), written as is by the
    get-flow handlers (e.g. selfservice/flow/login/handler.go getLoginFlow)."""
    r = httpx.get(f"{server.public_url}/.auth/self-service/{kind}/flows?id={uuid.uuid4()}", timeout=10)
    assert r.status_code == 404
    assert _error(r) == {"code": 404, "status": "Not Found", "message": "Unable to locate the resource"}


def test_unknown_error_id_is_kratos_not_found(server: Any) -> None:
    """selfservice/errorx/handler.go fetchError → persister → sqlcon.ErrNoRows."""
    for raw in (str(uuid.uuid4()), "not-a-uuid"):
        r = httpx.get(f"{server.public_url}/.auth/self-service/errors?id={raw}", timeout=10)
        assert r.status_code == 404
        assert _error(r) == {"code": 404, "status": "Not Found", "message": "Unable to locate the resource"}
    stub = httpx.get(f"{server.public_url}/.auth/self-service/errors?id=stub:500", timeout=10).json()
    assert stub["error"]["reason"] == "This is a stub error."
    assert (
        stub["error"]["message"]
        == "An internal server error occurred, please contact the system administrator"
    )


def test_submitting_an_unknown_recovery_flow(server: Any) -> None:
    """selfservice/flow/recovery/handler.go updateRecoveryFlow: ErrNotFound with this reason."""
    r = httpx.post(
        f"{server.public_url}/.auth/self-service/recovery?flow={uuid.uuid4()}",
        json={"method": "code", "email": "nobody@example.test"},
        timeout=10,
    )
    assert r.status_code == 404
    assert _error(r) == {
        "code": 404,
        "status": "Not Found",
        "message": "Unable to locate the resource",
        "reason": "The recovery request could not be found. Please restart the flow.",
    }


# --- SQLite DSNs -------------------------------------------------------------------------------


def test_kratos_sqlite_dsn_is_an_absolute_path(tmp_path: Path) -> None:
    """Kratos' docs write ``sqlite:///var/lib/sqlite/db.sqlite?_fk=true``: pop strips ``sqlite://``
    and go-sqlite3 takes the rest up to ``?`` as the file, an absolute path. Started from another
    working directory, the database must land at that absolute path, with the options applied."""
    data = tmp_path / "var" / "lib"
    data.mkdir(parents=True)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    public_port, admin_port = ports()
    cfg = base_config(tmp_path, public_port, admin_port)
    cfg["dsn"] = f"sqlite://{data}/db.sqlite?_fk=true&_journal_mode=WAL&_busy_timeout=3000"
    assert cfg["dsn"].startswith("sqlite:///")
    path = write_config(tmp_path / "cfg.yaml", cfg)
    migrate(path, elsewhere)
    with running(serve_argv(path), cwd=elsewhere, public_port=public_port, admin_port=admin_port) as proc:
        c = httpx.Client(base_url=proc.public_url, timeout=10)
        flow = c.get("/.auth/self-service/registration/api").json()
        r = c.post(
            f"/.auth/self-service/registration?flow={flow['id']}",
            json={"method": "password", "password": PASSWORD, "traits": {"email": "dsn@example.test"}},
        )
        assert r.status_code == 200, r.text
        # Recovery is off by default, with Kratos' text (selfservice/flow/recovery/handler.go).
        off = c.get("/.auth/self-service/recovery/api")
        c.close()
        assert off.status_code == 400
        assert _error(off)["reason"] == "Recovery is not allowed because it was disabled."
    assert (data / "db.sqlite").is_file()
    assert not list(elsewhere.glob("*.sqlite")) and not (elsewhere / "var").exists()


def test_relative_sqlite_dsn_is_in_the_working_directory(tmp_path: Path) -> None:
    public_port, admin_port = ports()
    cfg = base_config(tmp_path, public_port, admin_port)
    cfg["dsn"] = "sqlite://rel.db?_fk=true"
    path = write_config(tmp_path / "cfg.yaml", cfg)
    work = tmp_path / "work"
    work.mkdir()
    migrate(path, work)
    with running(serve_argv(path), cwd=work, public_port=public_port, admin_port=admin_port) as proc:
        assert httpx.get(f"{proc.admin_url}/health/ready", timeout=10).status_code == 200
    assert (work / "rel.db").is_file()


@pytest.mark.parametrize(
    ("option", "named"),
    [
        pytest.param("_fk=false", "_fk=false", id="foreign-keys-off"),
        pytest.param("_auth_user=admin", "'_auth_user'", id="unknown-option"),
    ],
)
def test_a_sqlite_option_sidecar_cannot_honour_stops_the_start(
    tmp_path: Path, option: str, named: str
) -> None:
    public_port, admin_port = ports()
    cfg = base_config(tmp_path, public_port, admin_port)
    cfg["dsn"] = f"sqlite://{tmp_path}/db.sqlite?{option}"
    path = write_config(tmp_path / "cfg.yaml", cfg)
    done = subprocess.run(
        [*serve_argv(path)],
        cwd=tmp_path,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert named in done.stderr and "dsn" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert not (tmp_path / "db.sqlite").exists()


@pytest.mark.parametrize("kind", ["login", "registration"])
def test_session_token_exchange_code_on_creation_only(server: Any, kind: str) -> None:
    """Kratos (selfservice/flow/{login,registration}/handler.go): an API flow created with
    ``return_session_token_exchange_code=true`` carries ``session_token_exchange_code`` (64
    alphanumerics) in the creation answer only; without the parameter there is none. The whole
    exchange is tested in tests/e2e/test_oidc_token_exchange.py."""
    url = f"{server.public_url}/.auth/self-service/{kind}/api"
    r = httpx.get(url, params={"return_session_token_exchange_code": "true"}, timeout=10)
    assert r.status_code == 200, r.text
    code = r.json()["session_token_exchange_code"]
    assert len(code) == 64 and code.isalnum()
    fetched = httpx.get(f"{url.removesuffix('/api')}/flows", params={"id": r.json()["id"]}, timeout=10)
    assert fetched.status_code == 200 and "session_token_exchange_code" not in fetched.json()
    assert "session_token_exchange_code" not in httpx.get(url, timeout=10).json()

"""``sidecar config check`` and the start of ``sidecar serve``, driven from outside as a user does:
every problem is one line naming the key, the exit code is non-zero, and nothing is a traceback."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sidecar.storage.monitor import INTERVAL
from tests.conftest import free_port, wait_until_ready
from tests.ops.serve import COOKIE_SECRET, clean_env

SIDECAR = [sys.executable, "-m", "sidecar"]
SECRET_ENV = {"SIDECAR_SECRETS__COOKIE": f"[{COOKIE_SECRET}]"}


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        SIDECAR + args, cwd=cwd, env=clean_env(**env), capture_output=True, text=True, timeout=60
    )


def one_line(out: subprocess.CompletedProcess[str]) -> str:
    """The process failed with exactly one line on stderr (plus nothing else), no traceback."""
    assert out.returncode != 0, out.stdout + out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert "Traceback" not in out.stderr and len(lines) == 1, out.stderr
    return lines[0]


def ports_env(public: int | None = None, admin: int | None = None) -> dict[str, str]:
    return {
        "SIDECAR_SERVE__PUBLIC__HOST": "127.0.0.1",
        "SIDECAR_SERVE__PUBLIC__PORT": str(public or free_port()),
        "SIDECAR_SERVE__ADMIN__PORT": str(admin or free_port()),
    }


# --- config check: everything the server would load --------------------------------------------------


def test_config_check_prints_every_problem_of_the_files_it_names(tmp_path: Path) -> None:
    conf = tmp_path / "etc"
    (conf / "rules").mkdir(parents=True)
    (conf / "rules" / "bad.yaml").write_text(
        "version: 1\nrules:\n  - id: r\n    match: {paths: ['regex:^/a(b$']}\n    require: public\n"
    )
    (conf / "broken.schema.json").write_text("{not json")
    (conf / "sidecar.yaml").write_text(
        f"""
secrets: {{cookie: [{COOKIE_SECRET}]}}
dsn: sqlite:///{tmp_path}/no-such-folder/sidecar.db
identity:
  default_schema_id: missing
  schemas:
    - {{id: missing, url: file://./missing.schema.json}}
    - {{id: broken, url: file://./broken.schema.json}}
rules: [rules/*.yaml, nowhere/*.yaml]
courier:
  template_override_path: mail-templates
  smtp: {{connection_uri: "http://mail.example.test"}}
redis: {{url: "mysql://127.0.0.1/0"}}
proxy: {{upstream: "127.0.0.1:8080"}}
selfservice:
  methods:
    oidc:
      enabled: true
      config:
        providers:
          - {{id: corp, client_id: x, issuer_url: "https://sso.example.test", mapper_url: file://./corp.jsonnet}}
"""
    )
    out = run(["config", "check", "etc/sidecar.yaml"], tmp_path)
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    problems = dict(line.split(": ", 1) for line in out.stderr.splitlines())
    assert problems["identity.schemas[0] (id='missing')"] == (
        f"cannot read {conf}/missing.schema.json: No such file or directory"
    )
    assert "Expecting property name" in problems["identity.schemas[1] (id='broken')"]
    assert problems["rules.1"] == f"'{conf}/nowhere/*.yaml' matches no file"
    assert (
        problems["rules"]
        == f"{conf}/rules/bad.yaml:3: rule 'r' match.paths: invalid pattern: missing ): (?:^/a(b$)"
    )
    assert problems["dsn"] == f"the SQLite file's folder {tmp_path}/no-such-folder does not exist"
    assert problems["courier.template_override_path"] == f"{conf}/mail-templates is not a directory"
    assert "smtp:// or smtps://" in problems["courier.smtp.connection_uri"]
    assert "redis://" in problems["redis.url"]
    assert problems["proxy.upstream"] == "'127.0.0.1:8080' is not an absolute http:// or https:// URL"
    assert problems["selfservice.methods.oidc.config.providers.0.mapper_url"] == (
        f"cannot read {conf}/corp.jsonnet: No such file or directory"
    )
    assert "WARNING: All log messages" not in out.stderr  # RE2's own logging stays quiet


def test_config_check_warns_when_an_upstream_has_no_rules(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text(f"secrets: {{cookie: [{COOKIE_SECRET}]}}\nproxy: {{upstream: 'http://127.0.0.1:8080'}}\n")
    out = run(["config", "check", str(f)], tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == (
        "warning: rules: no rules are configured: every request to proxy.upstream will be denied (403)"
    )
    assert out.stdout.strip() == "configuration is valid"


def test_serve_refuses_what_config_check_finds(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text(f"secrets: {{cookie: [{COOKIE_SECRET}]}}\nrules: [rules/*.yaml]\n")
    out = run(["serve", "-c", str(f)], tmp_path, **ports_env())
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"rules.0: '{tmp_path}/rules/*.yaml' matches no file" in out.stderr


# --- start-up failures: one line, the cause and the key, non-zero ---------------------------------------


@pytest.fixture
def occupied() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.parametrize("listener", ["public", "admin"])
def test_port_in_use(tmp_path: Path, occupied: int, listener: str) -> None:
    env = ports_env(**{listener: occupied})
    line = one_line(run(["serve", "--dev"], tmp_path, **SECRET_ENV, **env))
    assert line == (
        f"sidecar: cannot listen on 127.0.0.1:{occupied} "
        f"(serve.{listener}.host, serve.{listener}.port): Address already in use"
    )


def test_database_unreachable(tmp_path: Path) -> None:
    port = free_port()
    dsn = f"postgres://sidecar:hunter2-password@127.0.0.1:{port}/sidecar"
    line = one_line(run(["serve", "--dev"], tmp_path, DSN=dsn, **SECRET_ENV, **ports_env()))
    assert line.startswith(
        f"sidecar: cannot use the database postgres://sidecar:***@127.0.0.1:{port}/sidecar (dsn): "
    )
    assert "Connect call failed" in line or "refused" in line
    assert "hunter2" not in line


def test_database_missing_at_migrate_up(tmp_path: Path, postgres_server: str) -> None:
    dsn = postgres_server.rsplit("/", 1)[0] + "/sidecar_no_such_database"
    line = one_line(run(["migrate", "up"], tmp_path, DSN=dsn))
    assert (
        line
        == f'sidecar: cannot use the database {dsn} (dsn): database "sidecar_no_such_database" does not exist'
    )


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        pytest.param(
            "sqlite:////proc/sidecar.db",
            "sidecar: cannot use the database sqlite:////proc/sidecar.db (dsn): unable to open database file",
            id="unwritable",
        ),
        pytest.param(
            "sqlite:////no/such/folder/sidecar.db",
            "  dsn: the SQLite file's folder /no/such/folder does not exist",
            id="missing-folder",
        ),
    ],
)
def test_unusable_sqlite_path(tmp_path: Path, dsn: str, expected: str) -> None:
    out = run(["serve", "--dev"], tmp_path, DSN=dsn, **SECRET_ENV, **ports_env())
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert expected in out.stderr.splitlines()


# --- the schema: refuse to start behind it, migrate on request, readiness tracks it ---------------------


def test_unmigrated_database_refuses_to_start_and_says_what_to_run(tmp_path: Path) -> None:
    line = one_line(run(["serve"], tmp_path, **SECRET_ENV, **ports_env()))
    assert line == (
        "sidecar: database schema is at version none, this sidecar needs 0005: "
        "run `sidecar migrate up` (or start with `sidecar serve --migrate`)"
    )


def _serve(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        SIDECAR + args,
        cwd=cwd,
        env=clean_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    return out


async def _drop_schema(dsn: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP TABLE alembic_version")
    finally:
        await conn.close()


def test_migrate_flag_then_readiness_follows_the_schema(tmp_path: Path, postgres_dsn: str) -> None:
    public, admin = free_port(), free_port()
    env = {**SECRET_ENV, **ports_env(public, admin), "DSN": postgres_dsn}
    proc = _serve(["serve", "--migrate"], tmp_path, env)
    try:
        wait_until_ready(f"http://127.0.0.1:{public}/.auth/health/ready", proc)
        assert httpx.get(f"http://127.0.0.1:{public}/.auth/self-service/login/api").status_code == 200
        # The schema disappears under a running server (a restored backup, a dropped database).
        asyncio.run(_drop_schema(postgres_dsn))
        ready = httpx.get(f"http://127.0.0.1:{public}/.auth/health/ready")
        assert ready.status_code == 503
        assert ready.json()["errors"]["database"] == (
            "database schema is at version none, this sidecar needs 0005: "
            "run `sidecar migrate up` (or start with `sidecar serve --migrate`)"
        )
        assert httpx.get(f"http://127.0.0.1:{admin}/health/ready").status_code == 503
        time.sleep(INTERVAL + 0.5)  # the store monitor's turn: it logs the change once
    finally:
        out = _stop(proc)
    assert proc.returncode == 0, out
    assert "Traceback" not in out
    assert out.count("database unavailable: database schema is at version none") == 1, out


# --- safer defaults and a quiet start ----------------------------------------------------------------------


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a listening TCP socket on ``port``, from the kernel's own table."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


def test_dev_listens_on_loopback_only_and_starts_quietly(tmp_path: Path) -> None:
    public, admin = free_port(), free_port()
    env = {"SIDECAR_SERVE__PUBLIC__PORT": str(public), "SIDECAR_SERVE__ADMIN__PORT": str(admin)}
    proc = _serve(["serve", "--dev"], tmp_path, env)
    try:
        wait_until_ready(f"http://127.0.0.1:{public}/.auth/health/ready", proc)
        assert listening_addresses(public) == {"0100007F"}  # 127.0.0.1, not 0.0.0.0
        # A page renders through the in-process API client (httpx): no request lines in the log.
        page = httpx.get(f"http://127.0.0.1:{public}/.auth/ui/login", follow_redirects=True)
        assert page.status_code == 200 and "?flow=" in str(page.url)
    finally:
        out = _stop(proc)
    assert proc.returncode == 0, out
    lines = out.splitlines()
    assert [line for line in lines if "listening" in line] == [
        next(line for line in lines if "sidecar listening: public http://127.0.0.1:" in line)
    ]
    for noise in ("Started server process", "alembic", "HTTP Request:", "Traceback", "flows?id="):
        assert noise not in out, out

"""Relative file references in a config file resolve against that file's folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sidecar.config.loader import load_config
from sidecar.config.paths import resolve_file_url

SECRET = "secrets: {cookie: [a-secret-of-at-least-16-chars]}\n"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("file://./s.json", "file:///etc/sidecar/s.json", id="kratos-dot"),
        pytest.param("file://s.json", "file:///etc/sidecar/s.json", id="netloc"),
        pytest.param("file://schemas/s.json", "file:///etc/sidecar/schemas/s.json", id="folder"),
        pytest.param("file://../s.json", "file:///etc/s.json", id="parent"),
        pytest.param("s.json", "file:///etc/sidecar/s.json", id="plain"),
        pytest.param("file:///abs/s.json", "file:///abs/s.json", id="absolute"),
        pytest.param("/abs/s.json", "file:///abs/s.json", id="absolute-plain"),
        pytest.param("file://./a b.json", "file:///etc/sidecar/a%20b.json", id="space"),
        pytest.param("base64://e30=", "base64://e30=", id="base64"),
        pytest.param("https://x.test/s.json", "https://x.test/s.json", id="https"),
    ],
)
def test_file_urls(value: str, expected: str) -> None:
    assert resolve_file_url(value, Path("/etc/sidecar")) == expected


def test_every_file_key_resolves_against_its_own_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "conf"
    (conf / "rules").mkdir(parents=True)
    other = tmp_path / "other"
    other.mkdir()
    (conf / "main.yaml").write_text(
        SECRET
        + """
identity:
  schemas:
    - {id: a, url: file://./identity.schema.json}
    - {id: b, url: schemas/b.json}
    - {id: c, url: "base64://e30="}
rules: [rules/*.yaml, /abs/rules.yaml]
courier: {template_override_path: mail}
selfservice:
  methods:
    oidc:
      config:
        providers:
          - {id: corp, client_id: x, mapper_url: file://./corp.jsonnet}
          - {id: inline, client_id: y, mapper_url: "base64://e30="}
"""
    )
    (other / "extra.yaml").write_text("rules: [more/*.yaml]\n")
    monkeypatch.chdir(tmp_path)  # the working directory must not matter
    c = load_config([conf / "main.yaml"])
    assert [s.url for s in c.identity.schemas] == [
        f"file://{conf}/identity.schema.json",
        f"file://{conf}/schemas/b.json",
        "base64://e30=",
    ]
    assert c.rules == [f"{conf}/rules/*.yaml", "/abs/rules.yaml"]
    assert c.courier.template_override_path == f"{conf}/mail"
    providers = c.selfservice.methods.oidc.config.providers
    assert [p.mapper_url for p in providers] == [f"file://{conf}/corp.jsonnet", "base64://e30="]
    # A later file's relative paths are its own folder's.
    c2 = load_config([conf / "main.yaml", other / "extra.yaml"])
    assert c2.rules == [f"{other}/more/*.yaml"]


def test_relative_config_path_and_env_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "s.yaml").write_text(SECRET + "rules: [r.yaml]\n")
    monkeypatch.chdir(tmp_path)
    assert load_config(["etc/s.yaml"]).rules == [f"{tmp_path}/etc/r.yaml"]
    # Values from the environment are relative to the working directory, as on a command line.
    env = {"SIDECAR_RULES": "[r.yaml]"}
    assert load_config(["etc/s.yaml"], environ=env).rules == ["r.yaml"]
    assert os.path.abspath("r.yaml") == f"{tmp_path}/r.yaml"


def test_dsn_stays_relative_to_the_working_directory(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text(SECRET + "dsn: sqlite:///sidecar.db\n")
    assert load_config([f]).dsn == "sqlite:///sidecar.db"

"""``${NAME}`` references in config files come from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from sidecar.config.loader import ConfigError, load_config

SECRET = "secrets: {cookie: [a-secret-of-at-least-16-chars]}\n"


def test_a_secret_inside_a_list_and_inside_a_longer_value(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text(
        SECRET
        + """
dsn: postgres://sidecar:${PG_PASSWORD}@db:5432/sidecar
selfservice:
  methods:
    oidc:
      config:
        providers:
          - {id: corp, client_id: sidecar, client_secret: "${OIDC_CORP_SECRET}"}
serve: {admin: {api_key: "literal $${NOT_A_REFERENCE} and $HOME and ${lower-case}"}}
"""
    )
    env = {"PG_PASSWORD": "p@ss:word", "OIDC_CORP_SECRET": "s3cr3t ${NOT_EXPANDED_TWICE}"}
    c = load_config([f], environ=env)
    assert c.dsn == "postgres://sidecar:p@ss:word@db:5432/sidecar"
    assert c.selfservice.methods.oidc.config.providers[0].client_secret == "s3cr3t ${NOT_EXPANDED_TWICE}"
    assert c.serve.admin.api_key == "literal ${NOT_A_REFERENCE} and $HOME and ${lower-case}"


def test_an_unset_variable_names_the_key_the_variable_and_the_file(tmp_path: Path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text(
        SECRET + "selfservice: {methods: {oidc: {config: {providers: [{id: a, client_id: b, "
        "client_secret: '${MISSING_ONE}'}]}}}}\nredis: {url: 'redis://${MISSING_TWO}:6379'}\n"
    )
    with pytest.raises(ConfigError) as exc:
        load_config([f], environ={})
    problems = dict(exc.value.problems)
    assert problems["selfservice.methods.oidc.config.providers.0.client_secret"] == (
        f"environment variable MISSING_ONE is not set (referenced as ${{MISSING_ONE}}) in {f}"
    )
    assert "MISSING_TWO" in problems["redis.url"]


def test_environment_values_are_never_expanded() -> None:
    env = {"SIDECAR_SERVE__ADMIN__API_KEY": "${HOME}", "HOME": "/root"}
    c = load_config(environ=env, overrides={"secrets": {"cookie": ["a-secret-of-at-least-16-chars"]}})
    assert c.serve.admin.api_key == "${HOME}"

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from sidecar.config.durations import parse_duration
from sidecar.config.loader import ConfigError, env_overrides, load_config

SECRET = {"secrets": {"cookie": ["a-secret-of-at-least-16-chars"]}}


def _problems(exc: pytest.ExceptionInfo[ConfigError]) -> dict[str, str]:
    return dict(exc.value.problems)


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("1h", 3600), ("30m", 1800), ("1h30m", 5400), ("500ms", 0.5), ("2s", 2), (90, 90), ("1d", 86400)],
)
def test_durations(raw: object, seconds: float) -> None:
    assert parse_duration(raw) == timedelta(seconds=seconds)


@pytest.mark.parametrize("raw", ["", "1x", "h", "1h 30m", True, None, "-1s"])
def test_bad_durations(raw: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(raw)


def test_defaults_follow_kratos() -> None:
    c = load_config(overrides=SECRET)
    assert c.serve.public.port == 4433
    assert c.serve.admin.port == 4434
    assert c.serve.admin.host == "127.0.0.1"
    assert c.serve.public.prefix == "/.auth"
    assert c.session.lifespan == timedelta(hours=24)
    assert c.session.cookie.name == "ory_kratos_session"
    assert c.identity.default_schema_id == "default"
    assert c.public_base_url == "http://127.0.0.1:4433/.auth"


def test_files_merge_in_order_and_env_overrides(tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text("serve: {public: {port: 1111, prefix: /auth}}\nsecrets: {cookie: [aaaaaaaaaaaaaaaaaaaa]}\n")
    b.write_text("serve: {public: {port: 2222}}\n")
    env = {
        "SIDECAR_SERVE__ADMIN__PORT": "3333",
        "SIDECAR_SESSION__LIFESPAN": "2h",
        "SIDECAR_REDIS__URL": "redis://127.0.0.1:6379/1",
        "DSN": "postgres://u@h/db",
        "UNRELATED": "x",
    }
    c = load_config([a, b], environ=env)
    assert c.serve.public.port == 2222
    assert c.serve.public.prefix == "/auth"
    assert c.serve.admin.port == 3333
    assert c.session.lifespan == timedelta(hours=2)
    assert c.redis is not None and c.redis.url == "redis://127.0.0.1:6379/1"
    assert c.dsn == "postgres://u@h/db"


def test_env_values_are_yaml_typed() -> None:
    assert env_overrides({"SIDECAR_SECRETS__COOKIE": "[x, y]", "SIDECAR_DEV": "true"}) == {
        "secrets": {"cookie": ["x", "y"]},
        "dev": True,
    }


def test_errors_name_key_path_and_reason() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(
            overrides={
                **SECRET,
                "serve": {"public": {"port": "not-a-port", "bogus": 1}},
                "session": {"lifespan": "forever"},
            }
        )
    problems = _problems(exc)
    assert "serve.public.port" in problems
    assert problems["serve.public.bogus"] == "unknown key"
    assert "invalid duration" in problems["session.lifespan"]


def test_production_needs_secrets_dev_generates_them() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config()
    assert "secrets.cookie" in _problems(exc)
    dev = load_config(dev=True)
    assert dev.dev is True
    assert len(dev.secrets.cookie[0]) >= 32
    assert dev.log.format == "text"


def test_short_secrets_and_bad_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(overrides={"secrets": {"cookie": ["short"]}})
    assert "secrets.cookie" in _problems(exc)
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config([bad])
    with pytest.raises(ConfigError, match="cannot read"):
        load_config([tmp_path / "missing.yaml"])


def test_kratos_yml_loads(tmp_path: Path) -> None:
    """A typical kratos.yml (keys we do not interpret included) loads as is."""
    f = tmp_path / "kratos.yml"
    f.write_text(
        """
version: v1.0.0
dsn: memory
serve:
  public: {base_url: http://127.0.0.1:4433/, cors: {enabled: true}}
  admin: {base_url: http://kratos:4434/}
selfservice:
  default_browser_return_url: http://127.0.0.1:4455/
  allowed_return_urls: [http://127.0.0.1:4455]
  methods:
    password: {enabled: true}
    totp: {config: {issuer: Kratos}, enabled: true}
  flows:
    error: {ui_url: http://127.0.0.1:4455/error}
    settings: {ui_url: http://127.0.0.1:4455/settings, privileged_session_max_age: 15m,
               required_aal: highest_available}
    recovery: {enabled: true, ui_url: http://127.0.0.1:4455/recovery, use: code}
    verification: {enabled: true, ui_url: http://127.0.0.1:4455/verification, use: code,
                   after: {default_browser_return_url: http://127.0.0.1:4455/}}
    logout: {after: {default_browser_return_url: http://127.0.0.1:4455/login}}
    login: {ui_url: http://127.0.0.1:4455/login, lifespan: 10m}
    registration:
      lifespan: 10m
      ui_url: http://127.0.0.1:4455/registration
      after:
        password: {hooks: [{hook: session}, {hook: show_verification_ui}]}
log: {level: debug, format: text, leak_sensitive_values: true}
secrets:
  cookie: [PLEASE-CHANGE-ME-I-AM-VERY-INSECURE]
  cipher: [32-LONG-SECRET-NOT-SECURE-AT-ALL]
ciphers: {algorithm: xchacha20-poly1305}
hashers: {algorithm: bcrypt, bcrypt: {cost: 8}}
identity:
  default_schema_id: default
  schemas: [{id: default, url: file:///etc/config/kratos/identity.schema.json}]
courier:
  smtp: {connection_uri: "smtps://test:test@mailslurper:1025/?skip_ssl_verify=true"}
feature_flags: {use_continue_with_transitions: true}
"""
    )
    c = load_config([f])
    assert c.selfservice.flows.login.lifespan == timedelta(minutes=10)
    hooks = c.selfservice.flows.registration.after.for_method("password")
    assert [h.hook for h in hooks] == ["session", "show_verification_ui"]
    assert c.hashers.algorithm == "bcrypt"


@pytest.mark.parametrize(
    ("name", "raw", "key", "expected"),
    [
        pytest.param("SIDECAR_REDIS__KEY_PREFIX", "nctest:", ("redis", "key_prefix"), "nctest:", id="colon"),
        pytest.param(
            "SIDECAR_SERVE__PUBLIC__PREFIX", "/auth", ("serve", "public", "prefix"), "/auth", id="path"
        ),
        pytest.param(
            "SIDECAR_SERVE__ADMIN__API_KEY", "0123", ("serve", "admin", "api_key"), "0123", id="digits"
        ),
        pytest.param(
            "SIDECAR_SERVE__ADMIN__API_KEY", "no", ("serve", "admin", "api_key"), "no", id="yaml-bool"
        ),
        pytest.param("SIDECAR_DSN", "sqlite:///x.db#a", ("dsn",), "sqlite:///x.db#a", id="hash"),
        pytest.param("SIDECAR_LOG__FORMAT", "text", ("log", "format"), "text", id="literal"),
    ],
)
def test_env_values_for_text_keys_are_taken_as_they_are(
    name: str, raw: str, key: tuple[str, ...], expected: str
) -> None:
    env = {name: raw, "SIDECAR_REDIS__URL": "redis://127.0.0.1:6379/0"}
    node: object = load_config(environ=env, overrides=SECRET)
    for part in key:
        node = getattr(node, part)
    assert node == expected


def test_env_values_for_other_keys_are_yaml() -> None:
    c = load_config(
        environ={
            "SIDECAR_SERVE__PUBLIC__PORT": "8443",
            "SIDECAR_SECRETS__COOKIE": "[first-secret-of-16-chars, second-secret-16-chars]",
            "SIDECAR_SELFSERVICE__METHODS__TOTP__ENABLED": "true",
            "SIDECAR_RULES": "[/etc/rules/a.yaml]",
        }
    )
    assert c.serve.public.port == 8443
    assert c.secrets.cookie == ["first-secret-of-16-chars", "second-secret-16-chars"]
    assert c.selfservice.methods.totp.enabled is True
    assert c.rules == ["/etc/rules/a.yaml"]


def test_commands_that_sign_nothing_need_no_secrets() -> None:
    c = load_config(require_secrets=False)
    assert c.secrets.cookie == []
    # Other production checks still apply.
    with pytest.raises(ConfigError) as exc:
        load_config(
            overrides={"session": {"cookie": {"same_site": "None", "secure": False}}}, require_secrets=False
        )
    assert list(_problems(exc)) == ["session.cookie.secure"]


def test_dev_binds_loopback_unless_told_otherwise(tmp_path: Path) -> None:
    assert load_config(dev=True).serve.public.host == "127.0.0.1"
    assert load_config(dev=True, environ={"SIDECAR_SERVE__PUBLIC__PORT": "8443"}).serve.public.host == (
        "127.0.0.1"
    )
    told = load_config(dev=True, environ={"SIDECAR_SERVE__PUBLIC__HOST": "0.0.0.0"})
    assert told.serve.public.host == "0.0.0.0"
    f = tmp_path / "c.yaml"
    f.write_text("serve: {public: {host: 0.0.0.0}}\n")
    assert load_config([f], dev=True).serve.public.host == "0.0.0.0"
    # Production keeps the documented default: all interfaces.
    assert load_config(overrides=SECRET).serve.public.host == "0.0.0.0"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param({}, "http1", id="default"),
        pytest.param({"SIDECAR_PROXY__UPSTREAM_CLIENT": "aiohttp"}, "aiohttp", id="key-path"),
        pytest.param({"SIDECAR_UPSTREAM_CLIENT": "aiohttp"}, "aiohttp", id="alias"),
        pytest.param(
            {"SIDECAR_UPSTREAM_CLIENT": "aiohttp", "SIDECAR_PROXY__UPSTREAM_CLIENT": "http1"},
            "http1",
            id="key-path-wins",
        ),
        pytest.param(
            {"DSN": "sqlite:///a.db", "SIDECAR_UPSTREAM_CLIENT": "aiohttp"}, "aiohttp", id="two-aliases"
        ),
    ],
)
def test_upstream_client_key_and_its_alias(env: dict[str, str], expected: str) -> None:
    assert load_config(environ=env, overrides=SECRET).proxy.upstream_client == expected


def test_an_unknown_upstream_client_names_the_key() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(environ={"SIDECAR_UPSTREAM_CLIENT": "httpx"}, overrides=SECRET)
    assert [key for key, _ in exc.value.problems] == ["proxy.upstream_client"]


@pytest.mark.parametrize(
    ("redis", "key", "reason"),
    [
        ({"mode": "sentinel"}, "redis", "needs the sentinels' addresses"),
        ({"mode": "cluster"}, "redis", "redis.url is required"),
        ({"url": "redis://h:1", "nodes": ["h:2"]}, "redis", "only for mode: cluster"),
        ({"url": "redis://h:1", "sentinels": ["h:2"]}, "redis", "only for mode: sentinel"),
        ({"mode": "cluster", "nodes": ["h"]}, "redis.nodes", "not host:port"),
        ({"mode": "sentinel", "sentinels": ["h:99999"]}, "redis.sentinels", "not host:port"),
        ({"url": "redis://h:1", "key_prefix": "{app}:"}, "redis.key_prefix", "must not contain {"),
        ({"url": "redis://h:1", "mode": "replicated"}, "redis.mode", ""),
    ],
)
def test_redis_topologies_refused_by_name(redis: dict[str, object], key: str, reason: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(overrides={**SECRET, "redis": redis})
    problems = _problems(exc)
    assert key in problems, problems
    assert reason in problems[key]


def test_redis_cluster_and_sentinel_load() -> None:
    cluster = load_config(overrides={**SECRET, "redis": {"mode": "cluster", "nodes": ["10.0.0.1:7000"]}})
    assert cluster.redis is not None and cluster.redis.nodes == ["10.0.0.1:7000"]
    sentinel = load_config(
        overrides={**SECRET, "redis": {"mode": "sentinel", "sentinels": ["s1:26379"], "sentinel_master": "m"}}
    )
    assert sentinel.redis is not None and sentinel.redis.sentinel_master == "m"


@pytest.mark.parametrize("listener", ["public", "admin"])
def test_the_http_server_key_and_its_request_line_limit(listener: str) -> None:
    assert getattr(load_config(environ={}, overrides=SECRET).serve, listener).server == "uvicorn"
    env = {f"SIDECAR_SERVE__{listener.upper()}__SERVER": "granian"}
    assert getattr(load_config(environ=env, overrides=SECRET).serve, listener).server == "granian"
    with pytest.raises(ConfigError) as exc:
        load_config(environ={f"SIDECAR_SERVE__{listener.upper()}__SERVER": "hypercorn"}, overrides=SECRET)
    assert [key for key, _ in exc.value.problems] == [f"serve.{listener}.server"]
    # hyper refuses targets over 64 KiB itself: a larger limit could not be honoured.
    big = {"serve": {listener: {"server": "granian", "max_request_line_size": "100KiB"}}}
    with pytest.raises(ConfigError) as exc:
        load_config(environ={}, overrides={**SECRET, **big})
    assert list(_problems(exc)) == [f"serve.{listener}.server"]
    assert "64KiB" in _problems(exc)[f"serve.{listener}.server"]
    fits = {"serve": {listener: {"server": "granian", "max_request_line_size": "64KiB"}}}
    assert getattr(load_config(environ={}, overrides={**SECRET, **fits}).serve, listener).server == "granian"

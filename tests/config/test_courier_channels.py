"""``courier.channels``, ``courier.delivery_strategy`` / ``courier.http`` and the recovery v2 flag,
as Kratos v25.4.0 reads them (``embedx/config.schema.json``: a channel's ``id`` is ``sms``, its
``type`` ``http``, its ``request_config`` an ``httpRequestConfig``; ``delivery_strategy`` is ``smtp``
or ``http``). What sidecar cannot do is refused by key with the reason. Delivery itself is tested
through ``sidecar serve`` in tests/courier/test_http_channels_serve.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sidecar.config.loader import ConfigError
from tests.conftest import make_config
from tests.ops.serve import COOKIE_SECRET, clean_env

SMS = {"id": "sms", "type": "http", "request_config": {"url": "http://127.0.0.1:1/sms", "method": "POST"}}


def _problems(**courier: Any) -> dict[str, str]:
    with pytest.raises(ConfigError) as refused:
        make_config(courier=courier)
    return dict(refused.value.problems)


def test_an_sms_channel_loads_with_kratos_defaults() -> None:
    courier = make_config(courier={"channels": [SMS]}).courier
    channel = courier.channel("sms")
    assert channel is not None and channel.request_config.method == "POST"
    assert channel.request_config.body_source.startswith("base64://")  # Kratos' default body
    assert make_config(courier={"channels": []}).courier.channels == []


@pytest.mark.parametrize(
    ("courier", "key", "reason"),
    [
        ({"channels": [{**SMS, "id": "whatsapp"}]}, "courier.channels.0.id", "'sms'"),
        ({"channels": [{**SMS, "type": "smtp"}]}, "courier.channels.0.type", "'http'"),
        ({"channels": [SMS, SMS]}, "courier.channels", "each channel id may appear once"),
        (
            {"channels": [{**SMS, "request_config": {"url": "ftp://x/"}}]},
            "courier.channels.0.request_config.url",
            "http:// or https://",
        ),
        (
            {"channels": [{**SMS, "request_config": {"url": "http://x/", "body": "https://x/b.jsonnet"}}]},
            "courier.channels.0.request_config.body",
            "use file:// or base64://",
        ),
        (
            {"channels": [{**SMS, "request_config": {"url": "http://x/", "auth": {"type": "oauth2"}}}]},
            "courier.channels.0.request_config.auth.type",
            "'api_key' or 'basic_auth'",
        ),
        (
            {"delivery_strategy": "http"},
            "courier",
            "delivery_strategy: http needs courier.http.request_config",
        ),
        ({"delivery_strategy": "pigeon"}, "courier.delivery_strategy", "'smtp' or 'http'"),
    ],
)
def test_refused_by_key(courier: dict[str, Any], key: str, reason: str) -> None:
    problems = _problems(**courier)
    assert key in problems, problems
    assert reason in problems[key]


def test_recovery_v2_flag_is_refused() -> None:
    """Kratos sends recovery codes by SMS only in recovery v2 (``feature_flags.choose_recovery_address``,
    ``selfservice/strategy/code/strategy_recovery.go``); sidecar has no recovery v2."""
    with pytest.raises(ConfigError) as refused:
        make_config(feature_flags={"choose_recovery_address": True})
    assert "recovery v2" in dict(refused.value.problems)["feature_flags.choose_recovery_address"]
    assert make_config(feature_flags={"choose_recovery_address": False})


def test_a_trait_verified_via_sms_needs_an_sms_channel(tmp_path: Path) -> None:
    schema = {
        "type": "object",
        "properties": {
            "traits": {
                "type": "object",
                "properties": {
                    "phone": {
                        "type": "string",
                        "format": "tel",
                        "ory.sh/kratos": {"verification": {"via": "sms"}},
                    }
                },
            }
        },
    }
    (tmp_path / "phone.json").write_text(json.dumps(schema))
    config = {
        "dsn": "memory",
        "secrets": {"cookie": [COOKIE_SECRET]},
        "identity": {"default_schema_id": "p", "schemas": [{"id": "p", "url": "file://./phone.json"}]},
    }
    (tmp_path / "s.yaml").write_text(json.dumps(config))
    argv = [sys.executable, "-m", "sidecar", "config", "check", "s.yaml"]
    out = subprocess.run(argv, cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "courier.channels" in out.stdout + out.stderr
    assert "traits.phone is verified via sms" in out.stdout + out.stderr
    config["courier"] = {"channels": [SMS]}
    (tmp_path / "s.yaml").write_text(json.dumps(config))
    out = subprocess.run(argv, cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60)
    assert "courier.channels" not in out.stdout + out.stderr, out.stdout + out.stderr


def test_kratos_go_template_sources_are_refused() -> None:
    """Kratos' ``courier.templates`` (``embedx/config.schema.json`` ``courierTemplates``) point at Go
    templates (``{{ .RecoveryCode }}``); sidecar renders Jinja2 and refuses them by key instead of
    sending its own text while the config claims otherwise."""
    source = {
        "recovery_code": {
            "valid": {"email": {"body": {"plaintext": "base64://e3sgLlJlY292ZXJ5Q29kZSB9fQ=="}}}
        }
    }
    problems = _problems(templates=source)
    assert "recovery_code" in problems["courier.templates"]
    assert "courier.template_override_path" in problems["courier.templates"]
    assert make_config(courier={"templates": {}}).courier.templates.model_extra == {}

"""What building the apps imports: the optional protocols' libraries stay out of a server (and of
every CLI subprocess the suite starts) that does not use them. Each costs a measurable share of a
start (``python -X importtime``); these tests pin which modules load, never how long anything takes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

BUILD_APPS = textwrap.dedent(
    """
    import asyncio, json, sys
    from sidecar.app import build_services, create_admin_app, create_public_app
    from sidecar.config.loader import load_config
    from sidecar.errors import ServiceUnavailable

    config = load_config(overrides=json.loads(sys.argv[1]))
    services = build_services(config)
    create_public_app(services)
    create_admin_app(services)
    try:
        asyncio.run(services.database.ping())  # the readiness check: schema not migrated
    except ServiceUnavailable:
        pass
    print(json.dumps(sorted(sys.modules)))
    """
)

RUN_VERSION = textwrap.dedent(
    """
    import json, sys
    from sidecar.cli import main

    main(["version"])
    print(json.dumps(sorted(sys.modules)))
    """
)

BASE = {
    "dsn": "sqlite:///:memory:",
    "secrets": {"cookie": ["test-cookie-secret-0123456789abcdef"]},
    "serve": {"public": {"base_url": "http://127.0.0.1:4433/.auth"}},
    "selfservice": {"default_browser_return_url": "http://127.0.0.1:4433/"},
}


def _loaded_modules(code: str, *args: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.splitlines()[-1]))


def _top_level(modules: set[str]) -> set[str]:
    return {m.partition(".")[0] for m in modules}


@pytest.fixture(scope="module")
def default_apps() -> set[str]:
    """The top-level modules loaded by building both apps on a default config (SAML off, no SCIM
    request, sessions in SQL, the http1 upstream client) and asking the database's readiness."""
    return _top_level(_loaded_modules(BUILD_APPS, json.dumps(BASE)))


@pytest.mark.parametrize(
    "library",
    [
        pytest.param("scim2_models", id="scim2-models"),
        pytest.param("scim2_server", id="scim2-server"),
        pytest.param("saml2", id="pysaml2"),
        pytest.param("xmlschema", id="xmlschema"),
        pytest.param("redis", id="redis-py"),  # sessions in SQL
        pytest.param("aiohttp", id="aiohttp"),  # http1 upstream client, no WebSocket proxied yet
        pytest.param("alembic", id="alembic"),  # readiness reads the revisions itself
        pytest.param("webauthn", id="py-webauthn"),  # webauthn and passkey methods off
        pytest.param("qrcode", id="qrcode"),  # totp off
    ],
)
def test_default_apps_leave_unused_libraries_unimported(default_apps: set[str], library: str) -> None:
    assert "sidecar" in default_apps  # the apps were built in that process
    assert library not in default_apps


@pytest.mark.parametrize(
    ("method", "library"), [("webauthn", "webauthn"), ("passkey", "webauthn"), ("totp", "qrcode")]
)
def test_an_enabled_method_loads_its_library_with_the_apps(method: str, library: str) -> None:
    """Loaded while building the strategies, so a server missing it fails at start, not at the
    first registration."""
    overrides = json.loads(json.dumps(BASE))
    overrides["selfservice"]["methods"] = {method: {"enabled": True}}
    assert library in _top_level(_loaded_modules(BUILD_APPS, json.dumps(overrides)))


@pytest.mark.parametrize(
    "module",
    [
        pytest.param("sidecar.policy_tests", id="policy-tests"),
        pytest.param("sidecar.proxy.explain", id="rules-explain"),
        pytest.param("joserfc", id="joserfc"),
    ],
)
def test_a_command_leaves_the_rules_tools_unimported(module: str) -> None:
    """``sidecar.cli`` builds the ``rules`` subcommands' parser for every command; their code
    loads only when one of them runs."""
    loaded = _loaded_modules(RUN_VERSION)
    assert "sidecar.cli_rules" in loaded
    assert module not in loaded and module not in _top_level(loaded)

"""The README's commands and examples, run as a reader would run them, against a real sidecar.

Only addresses change (free ports instead of 4433/4434, which may be taken on a shared machine);
every such change is a single exact replacement that fails if the text no longer has it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import ory_kratos_client as k
import pytest
from ory_kratos_client.exceptions import UnauthorizedException

from tests.conftest import free_port, make_config
from tests.docs.test_snippets import ROOT, blocks
from tests.live import live_sidecar
from tests.ops.serve import COOKIE_SECRET, clean_env, running
from tests.proxy.harness import upstream_server

README = ROOT / "README.md"
SDK_EXAMPLE = ROOT / "examples" / "kratos_sdk.py"


def swap(text: str, old: str, new: str) -> str:
    assert old in text, f"{old!r} is no longer in the text"
    return text.replace(old, new)


def readme_block(containing: str) -> str:
    [found] = [b.text for b in blocks(README) if containing in b.text]
    return found


def test_readme_admin_curl_commands_work_as_written() -> None:
    commands = readme_block("curl -s -X POST http://127.0.0.1:4434/admin/identities")
    with live_sidecar(make_config()) as live:
        script = swap(commands, "http://127.0.0.1:4434", live.admin_url)
        out = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 0, out.stderr
        created = json.loads(out.stdout[: out.stdout.index("}{") + 1])
        assert created["traits"]["email"] == "ann@example.test"
        assert "HTTP/1.1 200" in out.stdout and "bob@example.test" in out.stdout.split("HTTP/1.1 200", 1)[1]
        assert "cy@example.test" in out.stdout.split("HTTP/1.1 200", 1)[1]  # the batch import
        # The imported bcrypt hash is real: bob signs in with the password the comment names.
        with httpx.Client(base_url=live.public_url, timeout=30) as public:  # a busy CI machine
            flow = public.get("/self-service/login/api").json()
            body = {
                "method": "password",
                "identifier": "bob@example.test",
                "password": "an-imported-passphrase",
            }
            signed_in = public.post(f"/self-service/login?flow={flow['id']}", json=body)
            assert signed_in.status_code == 200, signed_in.text


def test_sdk_example_with_the_admin_key(tmp_path: Path) -> None:
    """examples/kratos_sdk.py (the README's SDK snippet) with serve.admin.api_key set."""
    key = "an-admin-key-for-the-sdk-example-0123"
    with live_sidecar(make_config(serve={"admin": {"api_key": key}})) as live:
        httpx.post(
            f"{live.admin_url}/admin/identities",
            headers={"Authorization": f"Bearer {key}"},
            json={"schema_id": "default", "traits": {"email": "sdk@example.test"}},
        ).raise_for_status()
        source = swap(SDK_EXAMPLE.read_text(), "http://127.0.0.1:4434", live.admin_url)
        source = swap(source, "http://127.0.0.1:4433/.auth", live.public_url)
        script = tmp_path / "kratos_sdk.py"
        script.write_text(source)
        out = subprocess.run(
            [sys.executable, str(script)],
            env={**os.environ, "SIDECAR_SERVE__ADMIN__API_KEY": key},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert "'email': 'sdk@example.test'" in out.stdout
        assert "registration flow " in out.stdout

        # What the README warns about: access_token alone is never sent by the admin calls.
        plain = k.IdentityApi(k.ApiClient(k.Configuration(host=live.admin_url, access_token=key)))
        with pytest.raises(UnauthorizedException):
            plain.list_identities()


def test_full_example_config_serves_in_front_of_an_app(tmp_path: Path) -> None:
    """examples/sidecar.yaml as shipped, from another working directory, with the secret, ports,
    database and upstream from the environment as its comments say."""
    public_port, admin_port = free_port(), free_port()
    with upstream_server() as upstream:
        env = clean_env(
            SIDECAR_SECRETS__COOKIE=f"[{COOKIE_SECRET}]",
            SIDECAR_SERVE__PUBLIC__HOST="127.0.0.1",
            SIDECAR_SERVE__PUBLIC__PORT=str(public_port),
            SIDECAR_SERVE__PUBLIC__BASE_URL=f"http://127.0.0.1:{public_port}/.auth",
            SIDECAR_SERVE__ADMIN__PORT=str(admin_port),
            SIDECAR_PROXY__UPSTREAM=f"http://127.0.0.1:{upstream.port}",
            DSN=f"sqlite:///{tmp_path}/sidecar.db",
        )
        check = subprocess.run(
            [sys.executable, "-m", "sidecar", "config", "check", str(ROOT / "examples" / "sidecar.yaml")],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (check.returncode, check.stderr) == (0, ""), check.stderr
        argv = [
            sys.executable,
            "-m",
            "sidecar",
            "serve",
            "-c",
            str(ROOT / "examples" / "sidecar.yaml"),
            "--migrate",
        ]
        with running(argv, cwd=tmp_path, public_port=public_port, admin_port=admin_port, env=env) as proc:
            base = proc.public_url
            # rules/example.yaml, found relative to the file: the storefront is open ...
            storefront = httpx.get(f"{base}/")
            assert storefront.status_code == 200 and storefront.json()["path"] == "/"
            # ... internal tooling is denied, the rest needs a session.
            assert httpx.get(f"{base}/internal/x").status_code == 403
            page = httpx.get(f"{base}/orders", headers={"Accept": "text/html"})
            assert page.status_code in (302, 303)
            assert page.headers["location"].startswith(f"{base}/.auth/self-service/login/browser")
            # The identity schema next to the file is the one in use.
            schema = httpx.get(f"{base}/.auth/schemas/default").json()
            assert schema == json.loads((ROOT / "examples" / "identity.schema.json").read_text())

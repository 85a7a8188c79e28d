"""The OpenID provider the OIDC end-to-end tests sign in with: panva's ``oidc-provider`` (npm) on a
free 127.0.0.1 port, with one test client and a few accounts, and a client that walks a browser's
redirects through its login form by hand.

The provider's packages are installed into ``tests/e2e/oidc/node_modules`` when missing (``npm
install --no-audit --no-fund``, pinned by the lock file); a missing ``node`` or ``npm``, or a failed
install, fails the run.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest

from tests.api.public.helpers import node_value
from tests.conftest import free_port

PROVIDER_DIR = Path(__file__).resolve().parent / "oidc"
CLIENT_ID = "sidecar-e2e"
CLIENT_SECRET = "sidecar-e2e-secret-0123456789"
ACCOUNTS = {
    "alice": {"email": "alice@example.com", "email_verified": True, "given_name": "Alice"},
    "bob": {"given_name": "Bob"},  # no email: the sign-up form asks for it
    "carol": {"email": "carol@example.com", "email_verified": False},
    "dave": {"email": "dave@example.com", "email_verified": True},
}
MAPPER = """
local claims = std.extVar('claims');
{
  identity: {
    traits: {
      [if 'email' in claims then 'email' else null]: claims.email,
      [if 'given_name' in claims then 'name' else null]: { first: claims.given_name },
    },
  },
}
"""


def ensure_node_modules() -> None:
    """Install the pinned provider if it is not there yet."""
    if (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        pytest.fail("node and npm are required for the OIDC provider tests (apt-get install nodejs npm)")
    command = [npm, "install", "--no-audit", "--no-fund"]  # pinned by package.json + package-lock.json
    done = subprocess.run(command, cwd=PROVIDER_DIR, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        pytest.fail(f"{' '.join(command)} failed in {PROVIDER_DIR}:\n{done.stdout}\n{done.stderr}")


@dataclass
class OidcProvider:
    issuer: str
    process: subprocess.Popen[str]


@contextlib.contextmanager
def oidc_provider(
    redirect_uris: list[str], *, client_id: str = CLIENT_ID, client_secret: str = CLIENT_SECRET
) -> Iterator[OidcProvider]:
    ensure_node_modules()
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "PORT": str(port),
        "NODE_ENV": "test",
        "OIDC_CLIENTS": json.dumps(
            [{"client_id": client_id, "client_secret": client_secret, "redirect_uris": redirect_uris}]
        ),
        "OIDC_ACCOUNTS": json.dumps(ACCOUNTS),
    }
    process = subprocess.Popen(
        ["node", "provider.mjs"],
        cwd=PROVIDER_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            if process.poll() is not None:
                output = process.stdout.read() if process.stdout else ""
                pytest.fail(f"oidc-provider exited with {process.returncode}:\n{output}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{issuer}/.well-known/openid-configuration", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail("oidc-provider did not start within 20s")
            time.sleep(0.1)
        yield OidcProvider(issuer, process)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def provider_config(issuer: str, **extra: Any) -> dict[str, Any]:
    """One ``selfservice.methods.oidc.config.providers[]`` entry for this provider's test client
    (``id: op``, ``label: Test OP`` unless ``extra`` says otherwise)."""
    return {
        "id": "op",
        "provider": "generic",
        "label": "Test OP",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "issuer_url": issuer,
        "trust_email_verified": True,
        **extra,
    }


def through_provider(client: httpx.Client, url: str, login: str, *, back: Callable[[str], bool]) -> str:
    """From the provider's authorize ``url``, through its login form as ``login``, following every
    redirect by hand until one goes where ``back`` says: that URL, not fetched."""
    r = client.get(url)
    for _ in range(12):
        if r.status_code == 200 and 'name="login"' in r.text:
            action = re.search(r'<form[^>]*action="([^"]+)"', r.text)
            assert action is not None
            form = {"prompt": "login", "login": login, "password": "x"}
            r = client.post(urljoin(url, action.group(1)), data=form)
            continue
        assert r.status_code in (302, 303), r.text
        url = urljoin(url, r.headers["location"])
        if back(url):
            return url
        r = client.get(url)
    raise AssertionError("never came back from the provider")


def to_provider_and_back(
    client: httpx.Client, base: str, issuer: str, login: str, provider: str = "op"
) -> str:
    """A browser login flow at ``base`` left with the ``provider`` button (the sidecar's 303), through
    the provider at ``issuer`` as ``login``: our callback URL, not fetched."""
    flow = client.get(f"{base}/self-service/login/browser", headers={"Accept": "application/json"}).json()
    leave = client.post(
        f"{base}/self-service/login?flow={flow['id']}",
        data={"csrf_token": node_value(flow, "csrf_token"), "provider": provider},
    )
    assert leave.status_code == 303, leave.text
    url = leave.headers["location"]
    assert url.startswith(f"{issuer}/auth?")
    return through_provider(client, url, login, back=lambda u: u.startswith(base))

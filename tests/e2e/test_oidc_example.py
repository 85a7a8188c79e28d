"""``examples/oidc/`` (the config shown in README.md and docs/OIDC.md) against a real OpenID
Connect provider: the file as shipped, its ``${VAR}`` secrets from the environment, its mappers
found next to it, and a provider that sends no ``picture`` claim."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from sidecar.config.loader import read_files
from sidecar.security.jsonnet import JsonnetSandbox
from sidecar.strategies.federation.mapper import run_mapper
from tests.api.public.helpers import node_value
from tests.conftest import free_port
from tests.e2e.conftest import serve_public_app, site_config
from tests.e2e.oidc_op import ACCOUNTS, oidc_provider, to_provider_and_back

pytestmark = pytest.mark.e2e

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "oidc"
SECRET = "corp-client-secret-0123456789"


def example_methods(issuer: str) -> dict[str, Any]:
    """The example's ``selfservice.methods``, read by the real loader; only the issuer is ours."""
    data = read_files([EXAMPLE / "sidecar.yaml"], {"OIDC_CORP_SECRET": SECRET, "GITHUB_SECRET": "gh-secret"})
    methods: dict[str, Any] = data["selfservice"]["methods"]
    corp = methods["oidc"]["config"]["providers"][0]
    assert corp["issuer_url"] == "https://sso.example.com/realms/main"
    assert corp["client_secret"] == SECRET
    assert corp["mapper_url"] == f"file://{EXAMPLE}/oidc.corp.jsonnet"
    corp["issuer_url"] = issuer
    return methods


def test_sign_in_with_the_example_config(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}/.auth"
    callback = f"{base}/self-service/methods/oidc/callback/corp"
    assert "picture" not in cast(dict[str, Any], ACCOUNTS["alice"])  # the old docs' mapper needed it
    with oidc_provider([callback], client_id="sidecar", client_secret=SECRET) as provider:
        config = site_config(tmp_path, port, selfservice={"methods": example_methods(provider.issuer)})
        with serve_public_app(config), httpx.Client(timeout=10) as client:
            back = to_provider_and_back(client, base, provider.issuer, "alice", provider="corp")
            assert urlsplit(back).path.endswith("/callback/corp")
            done = client.get(back)
            assert done.status_code == 303 and "/ui/error" not in done.headers["location"], done.text
            identity = client.get(f"{base}/sessions/whoami").json()["identity"]
            assert identity["traits"] == {"email": "alice@example.com", "name": {"first": "Alice"}}
            assert identity["verifiable_addresses"][0]["verified"] is True
            assert identity["metadata_public"] is None  # no picture claim, no metadata, no error

            # GitHub, from the same file: the browser leaves for github.com with our callback.
            client.cookies.clear()
            flow = client.get(f"{base}/self-service/login/browser", headers={"Accept": "application/json"})
            leave = client.post(
                f"{base}/self-service/login?flow={flow.json()['id']}",
                data={"csrf_token": node_value(flow.json(), "csrf_token"), "provider": "github"},
            )
            assert leave.status_code == 303
            target = urlsplit(leave.headers["location"])
            query = parse_qs(target.query)
            assert (
                f"{target.scheme}://{target.netloc}{target.path}"
                == "https://github.com/login/oauth/authorize"
            )
            assert query["client_id"] == ["Iv1.0123456789abcdef"]
            assert query["redirect_uri"] == [f"{base}/self-service/methods/oidc/callback/github"]
            assert query["scope"] == ["user:email"]


@pytest.mark.parametrize(
    ("claims", "traits", "verified"),
    [
        pytest.param(
            {
                "sub": "1",
                "iss": "https://sso",
                "email": "a@example.com",
                "email_verified": True,
                "given_name": "Ann",
                "picture": "https://sso/a.png",
            },
            {"email": "a@example.com", "name": {"first": "Ann"}},
            (("email", "a@example.com"),),
            id="everything",
        ),
        pytest.param(
            {"sub": "2", "email": "b@example.com"}, {"email": "b@example.com"}, (), id="no-verified-flag"
        ),
        pytest.param({"sub": "3"}, {}, (), id="nothing-but-sub"),
    ],
)
async def test_the_corp_mapper_reads_only_claims_that_are_there(
    claims: dict[str, Any], traits: dict[str, Any], verified: tuple[tuple[str, str], ...]
) -> None:
    source = (EXAMPLE / "oidc.corp.jsonnet").read_text()
    sandbox = JsonnetSandbox(1, 0)
    try:
        mapped = await run_mapper(sandbox, source, claims, timeout=10)
    finally:
        await sandbox.close()
    assert mapped.traits == traits
    assert mapped.verified_addresses == verified
    assert mapped.metadata_public == ({"picture": claims["picture"]} if "picture" in claims else None)

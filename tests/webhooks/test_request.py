"""What a web hook puts on the wire (``WebHookRunner.prepare``, Kratos' ``request/builder.go``),
with the real Jsonnet sandbox: headers and auth, JSON and form bodies, ``error 'cancel'``."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest

from sidecar import errors
from sidecar.config.webhook import WebHookConfig
from sidecar.security.jsonnet import JsonnetSandbox
from sidecar.webhooks.runner import WebHookRunner

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def b64(text: str) -> str:
    return "base64://" + base64.b64encode(text.encode()).decode()


def hook(body: str | None, **config: Any) -> WebHookConfig:
    return WebHookConfig.model_validate(
        {
            "url": "https://hooks.example.test/in",
            "method": "POST",
            "body": b64(body) if body else None,
            **config,
        }
    )


@pytest.fixture
async def runner() -> AsyncIterator[WebHookRunner]:
    sandbox = JsonnetSandbox(1)
    try:
        async with httpx.AsyncClient() as client:
            yield WebHookRunner(client, sandbox)
    finally:
        await sandbox.close()


async def test_json_body_headers_and_basic_auth(runner: WebHookRunner) -> None:
    prepared = await runner.prepare(
        hook(
            "function(ctx) { email: ctx.identity.traits.email }",
            headers={"x-tenant": "acme"},
            auth={"type": "basic_auth", "config": {"user": "hooks", "password": "s3cret"}},
        ),
        runner.context({"id": "f1"}, None, identity={"traits": {"email": "ada@example.test"}}),
    )
    assert prepared is not None
    headers = dict(prepared.headers)
    assert headers["X-Tenant"] == "acme" and headers["Content-Type"] == "application/json"
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"hooks:s3cret").decode()
    assert json.loads(prepared.body or b"") == {"email": "ada@example.test"}


async def test_api_key_in_a_cookie(runner: WebHookRunner) -> None:
    auth = {"type": "api_key", "config": {"name": "hook_key", "value": "k3y", "in": "cookie"}}
    prepared = await runner.prepare(hook(None, auth=auth), runner.context({}, None))
    assert prepared is not None and prepared.body is None
    assert dict(prepared.headers)["Cookie"] == "hook_key=k3y"


async def test_form_body_sends_a_null_empty(runner: WebHookRunner) -> None:
    prepared = await runner.prepare(
        hook("function(ctx) { to: 'ada', code: null, n: 7 }", headers=FORM), runner.context({}, None)
    )
    assert prepared is not None
    assert parse_qsl((prepared.body or b"").decode(), keep_blank_values=True) == [
        ("code", ""),
        ("n", "7"),
        ("to", "ada"),
    ]


async def test_form_body_that_is_no_object_is_an_empty_form(runner: WebHookRunner) -> None:
    prepared = await runner.prepare(hook("function(ctx) ['a', 'b']", headers=FORM), runner.context({}, None))
    assert prepared is not None and prepared.body == b""


async def test_cancel_skips_the_call_and_trace_carries_no_body(runner: WebHookRunner) -> None:
    assert await runner.prepare(hook("function(ctx) error 'cancel'"), runner.context({}, None)) is None
    traced = await runner.prepare(hook("function(ctx) {a: 1}", method="TRACE"), runner.context({}, None))
    assert traced is not None and traced.body is None


async def test_only_kratos_cancel_error_cancels(runner: WebHookRunner) -> None:
    # Kratos (request/builder.go) looks for go-jsonnet's "RUNTIME ERROR: cancel" in the error.
    with pytest.raises(errors.InternalError) as failed:
        await runner.prepare(hook("function(ctx) error 'do not cancel'"), runner.context({}, None))
    assert "RUNTIME ERROR: do not cancel" in str(failed.value.reason)

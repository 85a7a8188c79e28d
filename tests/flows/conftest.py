"""Flows are driven directly, without HTTP, on real stores (SQLite)."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.flows.outcome import Client
from sidecar.security import csrf
from tests.conftest import make_config

PASSWORD = "correct-Horse-battery-staple-42"
FLOW_TYPES = ["browser", "api"]


@pytest.fixture
async def services(services_factory: Any, sqlite_dsn: str) -> Any:
    return await services_factory(make_config(dsn=sqlite_dsn))


def browser_client(token: str | None = None, **values: Any) -> Client:
    """A browser holding CSRF cookie ``token`` (new when None) and submitting a masked copy."""
    token = token or csrf.new_token()
    values.setdefault("csrf_submitted", csrf.mask(token))
    return Client(ip="203.0.113.7", user_agent="test-browser", csrf_token=token, **values)


def api_client(**values: Any) -> Client:
    return Client(ip="203.0.113.8", user_agent="test-app", **values)


def client_for(flow_type: str, **values: Any) -> Client:
    return browser_client(**values) if flow_type == "browser" else api_client(**values)

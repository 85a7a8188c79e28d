"""sidecar/flows/logout.py without HTTP."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from sidecar import errors


async def test_browser_logout(services: Any) -> None:
    logout = services.selfservice.logout
    with pytest.raises(errors.SessionInactive):
        await logout.create_browser(None, None)
    issued = await services.sessions.issue(uuid.uuid4(), "password")
    with pytest.raises(errors.ReturnToForbidden):
        await logout.create_browser(issued.session, "https://evil.example")
    made = await logout.create_browser(issued.session, None)
    assert made.logout_url == f"http://127.0.0.1:4433/.auth/self-service/logout?token={made.logout_token}"
    session = await services.sessions.resolve(issued.token)
    with pytest.raises(errors.BadRequest):
        await logout.perform_browser(None, session, None)
    with pytest.raises(errors.Forbidden):
        await logout.perform_browser("ory_lo_" + "x" * 32, session, None)
    with pytest.raises(errors.Forbidden):
        await logout.perform_browser(made.logout_token, None, None)
    assert await logout.perform_browser(made.logout_token, session, None) == "http://127.0.0.1:4433/"
    assert await services.sessions.resolve(issued.token) is None


@pytest.mark.parametrize("token", [None, "", 5, ["ory_st_x"]])
async def test_api_logout_malformed(services: Any, token: object) -> None:
    with pytest.raises(errors.BadRequest):
        await services.selfservice.logout.perform_api(token)


async def test_api_logout(services: Any) -> None:
    issued = await services.sessions.issue(uuid.uuid4(), "password")
    await services.selfservice.logout.perform_api(issued.token)
    with pytest.raises(errors.Forbidden):
        await services.selfservice.logout.perform_api(issued.token)

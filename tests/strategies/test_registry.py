"""The ordered, config-filtered strategy registry."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.strategies.base import NOT_RESPONSIBLE, NotResponsible
from sidecar.strategies.registry import StrategyDeps, build_registry
from tests.conftest import make_config


def _deps(services: Any, **overrides: Any) -> StrategyDeps:
    return StrategyDeps(
        make_config(**overrides), services.identities, services.schemas, services.selfservice.throttle
    )


async def test_default_order(services: Any) -> None:
    registry = build_registry(_deps(services))
    assert [s.id for s in registry.login] == ["password"]
    assert [s.id for s in registry.registration] == ["profile", "password"]


async def test_disabled_methods_are_left_out(services: Any) -> None:
    registry = build_registry(_deps(services, selfservice={"methods": {"password": {"enabled": False}}}))
    assert registry.login == ()
    assert [s.id for s in registry.registration] == ["profile"]
    registry = build_registry(_deps(services, selfservice={"methods": {"profile": {"enabled": False}}}))
    assert [s.id for s in registry.registration] == ["password"]


def test_not_responsible_is_a_singleton() -> None:
    assert NotResponsible() is NOT_RESPONSIBLE and repr(NOT_RESPONSIBLE) == "NOT_RESPONSIBLE"


@pytest.mark.parametrize("method", [None, "oidc", "profile", 5])
async def test_password_answers_only_its_method(services: Any, method: object) -> None:
    from tests.flows.conftest import api_client

    password = build_registry(_deps(services)).login[0]
    flow = (await services.selfservice.login.init("api", api_client(), request_url="http://x/")).flow
    assert await password.login(flow, {"method": method}, api_client()) is NOT_RESPONSIBLE

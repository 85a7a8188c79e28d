"""The ordered, config-filtered strategy registry."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from sidecar.flows.messages import text
from sidecar.flows.model import Flow
from sidecar.flows.nodes import Node, submit_node
from sidecar.flows.outcome import Client
from sidecar.flows.strategy import (
    NOT_RESPONSIBLE,
    LoginStrategy,
    NotResponsible,
    RegistrationStrategy,
)
from sidecar.identity.model import Credential, Identity
from sidecar.strategies.deps import Roles, StrategyDeps
from sidecar.strategies.registry import STRATEGIES, StrategyClass, assurance, build_registry
from sidecar.strategies.saml.method import SamlMethod
from sidecar.strategies.saml.strategy import SamlStrategy
from tests.conftest import make_config


def _deps(services: Any, **overrides: Any) -> StrategyDeps:
    return StrategyDeps(
        make_config(**overrides),
        services.identities,
        services.schemas,
        services.selfservice.throttle,
        services.kv,
        services.jsonnet,
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


async def test_each_method_declares_its_flows(services: Any) -> None:
    """Roles come from the strategies' declarations: every method on, the flows get the right ones."""
    on = {"enabled": True}
    methods = {m: on for m in ("profile", "password", "totp", "lookup_secret", "webauthn", "passkey", "link")}
    registry = build_registry(_deps(services, selfservice={"methods": methods}))
    assert [s.id for s in registry.login] == ["password", "totp", "lookup_secret", "webauthn", "passkey"]
    assert [s.id for s in registry.registration] == ["profile", "password", "webauthn", "passkey"]
    assert [s.id for s in registry.settings] == [
        "profile",
        "password",
        "totp",
        "lookup_secret",
        "webauthn",
        "passkey",
    ]
    assert registry.recovery == () and registry.verification == ()  # code and link need a courier
    assert [(s.id, s.first_factor, s.second_factor) for s in registry.login] == [
        ("password", True, False),
        ("totp", False, True),
        ("lookup_secret", False, True),
        ("webauthn", False, True),
        ("passkey", True, False),
    ]


def test_second_factors_are_declared_by_their_strategies() -> None:
    assert [cls.id for cls in STRATEGIES if cls.counts_toward_aal] == ["totp", "lookup_secret", "webauthn"]


def test_saml_entry_answers_as_the_strategy_it_builds() -> None:
    """The registry lists SamlMethod, so that pysaml2 loads only with SAML on; it must say what
    SamlStrategy would."""
    member = Identity(
        "default", {}, credentials={"saml": Credential(type="saml", identifiers=("idp:alice",))}
    )
    assert (SamlMethod.id, SamlMethod.counts_toward_aal) == (SamlStrategy.id, SamlStrategy.counts_toward_aal)
    assert SamlMethod.second_factor_ready(member) == SamlStrategy.second_factor_ready(member)


class _HardwareToken(LoginStrategy, RegistrationStrategy):
    """A passkey-like method written against the flows' protocols only: nothing else changes."""

    id = "hardware_token"
    counts_toward_aal = True

    @staticmethod
    def second_factor_ready(identity: Identity) -> bool:
        return "hardware_token" in identity.credentials

    @classmethod
    def build(cls, deps: StrategyDeps) -> Roles | None:
        strategy = cls()
        return Roles(login=strategy, registration=strategy)

    def login_nodes(self, flow: Flow) -> list[Node]:
        return [submit_node(self.id, self.id, text(1, "Use your token"))]

    async def login(self, flow: Flow, body: Mapping[str, Any], client: Client) -> Identity | NotResponsible:
        return NOT_RESPONSIBLE

    def registration_nodes(self, flow: Flow) -> list[Node]:
        return []

    async def register(
        self, flow: Flow, body: Mapping[str, Any], client: Client
    ) -> Identity | NotResponsible:
        return NOT_RESPONSIBLE


async def test_a_new_strategy_is_one_class_and_one_registry_line(services: Any) -> None:
    strategies: tuple[type[StrategyClass], ...] = (*STRATEGIES, _HardwareToken)
    registry = build_registry(_deps(services), strategies)
    assert [s.id for s in registry.login] == ["password", "hardware_token"]
    assert [s.id for s in registry.registration] == ["profile", "password", "hardware_token"]
    level = assurance(strategies)
    owner = Identity(
        schema_id="default", traits={}, credentials={"hardware_token": Credential("hardware_token")}
    )
    assert level.second_factors(owner) == ["hardware_token"] and level.available_aal(owner) == "aal2"

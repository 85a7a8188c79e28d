"""Kratos keys that sidecar does not run are refused at load, by key and with the reason, never
accepted and ignored (issue 16 §3). Hook places follow Kratos' ``embedx/config.schema.json``
(``selfServiceAfterLogin``, ``selfServiceAfterRegistrationMethod``, ``selfServiceAfterSettingsAuthMethod``,
``selfServiceAfterRecoveryHooks``, ``selfServiceBeforeLogin``, ...)."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.config.loader import ConfigError
from tests.conftest import make_config


def problems(**overrides: Any) -> dict[str, str]:
    with pytest.raises(ConfigError) as refused:
        make_config(**overrides)
    return dict(refused.value.problems)


def flows(**sections: Any) -> dict[str, Any]:
    return {"selfservice": {"flows": sections}}


@pytest.mark.parametrize(
    ("overrides", "key", "words"),
    [
        pytest.param(
            {"selfservice": {"methods": {"saml": {"enabled": True, "config": {"providers": [{"id": "x"}]}}}}},
            "selfservice.methods.saml.config.providers.0",
            "exactly one of idp_metadata_url and raw_idp_metadata_xml",
            id="saml-metadata",
        ),
        pytest.param(
            {
                "selfservice": {
                    "methods": {
                        "saml": {
                            "config": {
                                "providers": [{"id": "x", "idp_metadata_url": "https://i", "binding": "soap"}]
                            }
                        }
                    }
                }
            },
            "selfservice.methods.saml.config.providers.0.binding",
            "",
            id="saml-binding",
        ),
        pytest.param(
            {"selfservice": {"methods": {"password": {"config": {"migrate_hook": {"enabled": True}}}}}},
            "selfservice.methods.password.config.migrate_hook.enabled",
            "no password migration hook",
            id="migrate_hook",
        ),
        pytest.param(
            {"hashers": {"argon2": {"memory": "2GB", "dedicated_memory": "1GB"}}},
            "hashers.argon2",
            "memory is larger than dedicated_memory",
            id="dedicated_memory",
        ),
        pytest.param(
            flows(login={"after": {"password": {"hooks": [{"hook": "session"}]}}}),
            "selfservice.flows.login",
            "after.password.hooks[0]: hook 'session' is not supported here",
            id="session-hook-in-login",
        ),
        pytest.param(
            flows(registration={"after": {"password": {"hooks": [{"hook": "require_verified_address"}]}}}),
            "selfservice.flows.registration",
            "after.password.hooks[0]: hook 'require_verified_address' is not supported here",
            id="login-hook-in-registration",
        ),
        pytest.param(
            flows(settings={"after": {"profile": {"hooks": [{"hook": "revoke_active_sessions"}]}}}),
            "selfservice.flows.settings",
            "after.profile.hooks[0]",
            id="revoke-on-profile",
        ),
        pytest.param(
            flows(login={"before": {"hooks": [{"hook": "revoke_active_sessions"}]}}),
            "selfservice.flows.login",
            "before.hooks[0]: hook 'revoke_active_sessions' is not supported here",
            id="before-non-webhook",
        ),
        pytest.param(
            flows(registration={"after": {"oidc": {"hooks": [{"hook": "b2b_sso", "config": {}}]}}}),
            "selfservice.flows.registration",
            "not in open-source Kratos",
            id="b2b_sso",
        ),
        pytest.param(
            flows(verification={"after": {"hooks": [{"hook": "sessions"}]}}),
            "selfservice.flows.verification",
            "unknown hook",
            id="typo",
        ),
        pytest.param(
            flows(login={"after": {"lookup": {"hooks": []}}}),
            "selfservice.flows.login",
            "after.lookup: not a method Kratos runs login hooks for",
            id="unknown-method-section",
        ),
        pytest.param(
            flows(settings={"after": {"profile": {"hooks": [{"hook": "show_verification_ui"}]}}}),
            "selfservice.flows.settings",
            "does not start verification from settings",
            id="show-verification-ui-in-settings",
        ),
    ],
)
def test_refused_by_key_with_the_reason(overrides: dict[str, Any], key: str, words: str) -> None:
    found = problems(**overrides)
    assert key in found, found
    assert words in found[key]


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param(
            flows(recovery={"after": {"hooks": [{"hook": "revoke_active_sessions"}]}}), id="recovery"
        ),
        pytest.param(
            flows(
                login={
                    "after": {
                        "hooks": [{"hook": "require_verified_address"}],
                        "oidc": {"hooks": [{"hook": "revoke_active_sessions"}]},
                    }
                }
            ),
            id="login",
        ),
        pytest.param(
            flows(
                registration={
                    "after": {
                        "hooks": [{"hook": "session"}],
                        "code": {"hooks": [{"hook": "session"}, {"hook": "show_verification_ui"}]},
                    }
                }
            ),
            id="registration",
        ),
        pytest.param(
            flows(settings={"after": {"password": {"hooks": [{"hook": "revoke_active_sessions"}]}}}),
            id="settings",
        ),
        pytest.param(
            {"hashers": {"argon2": {"expected_duration": "1s", "dedicated_memory": "2GB"}}}, id="argon2"
        ),
        pytest.param(
            {"serve": {"public": {"cors": {"debug": True}}}, "log": {"leak_sensitive_values": True}},
            id="debugging",
        ),
    ],
)
def test_what_kratos_allows_and_sidecar_runs_loads(overrides: dict[str, Any]) -> None:
    make_config(**overrides)

"""``feature_flags``: Kratos 25.4's keys only; each honoured, or accepted only with the value that is
sidecar's behaviour and refused by name otherwise (Kratos ``driver/config/config.go``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sidecar.config.loader import ConfigError, load_config
from tests.conftest import make_config


def _refusal(flags: dict[str, Any]) -> str:
    """The one problem, which names the key where it is and says why."""
    with pytest.raises(ConfigError) as refused:
        make_config(feature_flags=flags)
    [(where, why)] = refused.value.problems
    [key] = flags
    assert where == f"feature_flags.{key}"
    return why


@pytest.mark.parametrize(
    ("flags", "because"),
    [
        pytest.param({"legacy_continue_with_verification_ui": False}, "always lists", id="verification-ui"),
        pytest.param({"legacy_oidc_registration_node_group": False}, "oidc (or saml) group", id="oidc-group"),
        pytest.param(
            {"legacy_require_verified_login_error": True}, "every sign-in method", id="verified-true"
        ),
        pytest.param(
            {"legacy_require_verified_login_error": False}, "every sign-in method", id="verified-false"
        ),
        pytest.param({"choose_recovery_address": True}, "recovery v2", id="recovery-v2"),
        pytest.param({"cacheable_sessions": True}, "Ory-Session-Cache-For", id="cacheable"),
        pytest.param({"cacheable_sessions_max_age": "1m"}, "cacheable_sessions", id="cache-age"),
        pytest.param({"password_profile_registration_node_group": "oidc"}, "password", id="group-enum"),
        pytest.param({"no_such_flag": True}, "unknown key", id="unknown"),
    ],
)
def test_refused_by_name(flags: dict[str, Any], because: str) -> None:
    assert because in _refusal(flags)


def test_the_values_that_are_sidecar_behaviour_load(tmp_path: Path) -> None:
    """A kratos.yml with every flag set to what sidecar does loads."""
    f = tmp_path / "kratos.yml"
    f.write_text(
        """
dsn: memory
secrets: {cookie: [test-cookie-secret-0123456789abcdef]}
feature_flags:
  use_continue_with_transitions: true
  faster_session_extend: true
  legacy_continue_with_verification_ui: true
  legacy_oidc_registration_node_group: true
  password_profile_registration_node_group: password
  choose_recovery_address: false
  cacheable_sessions: false
"""
    )
    flags = load_config([f]).feature_flags
    assert flags.use_continue_with_transitions and flags.faster_session_extend
    assert flags.legacy_continue_with_verification_ui and flags.legacy_oidc_registration_node_group
    assert flags.password_profile_registration_node_group == "password"
    assert make_config().feature_flags.faster_session_extend is False

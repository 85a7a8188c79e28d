from __future__ import annotations

import pytest

from sidecar.security.identifiers import normalize_identifier


@pytest.mark.parametrize(
    ("value", "kind", "via", "expected"),
    [
        pytest.param("  Alice@Example.COM ", "password", None, "alice@example.com", id="email"),
        pytest.param("\uff21\uff2c\uff29\uff23\uff25", "password", None, "alice", id="fullwidth-nfkc"),
        pytest.param("Straße", "password", None, "strasse", id="casefold"),
        pytest.param("+49 (170) 123-4567", "password", None, "+491701234567", id="e164"),
        pytest.param("0049 170 1234567", "code", "sms", "+491701234567", id="00-prefix"),
        pytest.param("0170 1234567", "code", "sms", "01701234567", id="national"),
        pytest.param("GitHub:12345", "oidc", None, "GitHub:12345", id="oidc-untouched"),
        pytest.param("+not a phone", "password", None, "+not a phone", id="plus-text"),
    ],
)
def test_normalize(value: str, kind: str, via: str | None, expected: str) -> None:
    assert normalize_identifier(value, kind, via=via) == expected

from __future__ import annotations

import pytest

from sidecar.config.model import PasswordMethodConfig
from sidecar.security.passwords import check_password, common_passwords

CONFIG = PasswordMethodConfig.model_validate({})


def ids(password: str, identifiers: list[str] | None = None, **config: object) -> list[int]:
    cfg = PasswordMethodConfig.model_validate(config) if config else CONFIG
    return [v.id for v in check_password(password, identifiers or [], cfg)]


def test_bundled_list() -> None:
    words = common_passwords()
    assert len(words) >= 10_000
    assert {"password", "123456", "qwerty"} <= words


@pytest.mark.parametrize(
    ("password", "identifiers", "expected"),
    [
        pytest.param("correct horse battery staple", ["alice@example.com"], [], id="good"),
        pytest.param("short", [], [4000032], id="too-short"),
        pytest.param("PassWord", [], [4000005], id="common-case-insensitive"),
        pytest.param("alice@example.com1", ["alice@example.com"], [4000031], id="similar"),
        pytest.param("ecila-elpmaxe", ["alice@example.com"], [], id="not-similar"),
    ],
)
def test_policy(password: str, identifiers: list[str], expected: list[int]) -> None:
    assert ids(password, identifiers) == expected


def test_length_counts_characters_not_bytes() -> None:
    [violation] = check_password("äöü", [], CONFIG)
    assert violation.id == 4000032
    assert violation.context == {"min_length": 8, "actual_length": 3}
    assert ids("ü" * 8) == []
    [too_long] = check_password("x" * 1025, [], CONFIG)
    assert too_long.id == 4000033 and too_long.context == {"max_length": 1024, "actual_length": 1025}


def test_similarity_check_can_be_disabled() -> None:
    assert ids("alice@example.com1", ["alice@example.com"], identifier_similarity_check_enabled=False) == []

"""Password policy (Kratos ``selfservice/strategy/password/validator.go``), checked offline.

Kratos asks the Have I Been Pwned range API; the sidecar never calls out at runtime, so it checks a
bundled list instead: ``common-passwords.txt``, the 19,640 most common passwords compiled by
Royce Williams and shipped with Django (BSD-3-Clause, ``django/contrib/auth/common-passwords.txt.gz``),
lower-cased and de-duplicated. Lengths count characters, never bytes, and nothing is truncated.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from importlib import resources
from typing import Any, NamedTuple

from sidecar.config.model import PasswordMethodConfig

# Kratos' thresholds: closer than 5 edits, or sharing more than half of the password as one
# substring, and the password is considered derived from the identifier.
MIN_IDENTIFIER_DISTANCE = 5
MAX_SUBSTRING_RATIO = 0.5

POLICY_GENERIC = 4000005
TOO_SIMILAR = 4000031
TOO_SHORT = 4000032
TOO_LONG = 4000033


class PolicyViolation(NamedTuple):
    """One ``ui.messages`` entry: Kratos message id, English text and its context."""

    id: int
    text: str
    context: dict[str, Any]


@cache
def common_passwords() -> frozenset[str]:
    data = resources.files("sidecar.security").joinpath("common-passwords.txt").read_text(encoding="utf-8")
    return frozenset(line.strip().casefold() for line in data.splitlines() if line.strip())


def _levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def _longest_common_substring(a: str, b: str) -> int:
    best = 0
    previous = [0] * (len(b) + 1)
    for ca in a:
        current = [0]
        for j, cb in enumerate(b, 1):
            current.append(previous[j - 1] + 1 if ca == cb else 0)
        best = max(best, max(current))
        previous = current
    return best


def too_similar(password: str, identifier: str) -> bool:
    """Kratos' identifier similarity rule (case-insensitive)."""
    pw, ident = password.casefold(), identifier.casefold()
    if not ident or not pw:
        return False
    # Both algorithms are quadratic; long inputs are capped so a 4 KiB password costs little.
    pw, ident = pw[:256], ident[:256]
    ratio = _longest_common_substring(ident, pw) / len(pw)
    return _levenshtein(ident, pw) < MIN_IDENTIFIER_DISTANCE or ratio > MAX_SUBSTRING_RATIO


def check_password(
    password: str, identifiers: Iterable[str], config: PasswordMethodConfig
) -> list[PolicyViolation]:
    """Every policy violation of ``password`` (empty list: acceptable)."""
    length = len(password)
    if length < config.min_password_length:
        return [
            PolicyViolation(
                TOO_SHORT,
                f"The password must be at least {config.min_password_length} characters long, "
                f"but got {length}.",
                {"min_length": config.min_password_length, "actual_length": length},
            )
        ]
    if length > config.max_password_length:
        return [
            PolicyViolation(
                TOO_LONG,
                f"The password must be at most {config.max_password_length} characters long, "
                f"but got {length}.",
                {"max_length": config.max_password_length, "actual_length": length},
            )
        ]
    found: list[PolicyViolation] = []
    if config.identifier_similarity_check_enabled and any(
        too_similar(password, ident) for ident in identifiers
    ):
        found.append(
            PolicyViolation(
                TOO_SIMILAR,
                "The password can not be used because it is too similar to the identifier.",
                {},
            )
        )
    if password.casefold() in common_passwords():
        reason = "it is one of the most commonly used passwords and easy to guess"
        found.append(
            PolicyViolation(
                POLICY_GENERIC, f"The password can not be used because {reason}.", {"reason": reason}
            )
        )
    return found

"""Backup codes: Kratos' format, hashed storage."""

from __future__ import annotations

import re

from sidecar.identity.model import Identity
from sidecar.strategies.lookup_secret import LookupSecretStrategy, code_digest, new_codes, new_credential


def test_twelve_codes_of_eight_lowercase_alphanumerics() -> None:
    codes = new_codes()
    assert len(codes) == 12 and len(set(codes)) == 12
    assert all(re.fullmatch(r"[a-z0-9]{8}", c) for c in codes)


def test_credential_keeps_only_salted_digests() -> None:
    codes = new_codes()
    credential = new_credential(codes)
    salt = credential.config["salt"]
    stored = credential.config["recovery_codes"]
    assert [e["digest"] for e in stored] == [code_digest(salt, c) for c in codes]
    assert not any(c in str(credential.config) for c in codes)
    assert new_credential(codes).config["salt"] != salt


def test_all_codes_used_means_no_second_factor() -> None:
    credential = new_credential(new_codes())
    identity = Identity(schema_id="default", traits={}, credentials={"lookup_secret": credential})
    assert LookupSecretStrategy.second_factor_ready(identity)
    for entry in credential.config["recovery_codes"]:
        entry["used_at"] = "2026-01-01T00:00:00+00:00"
    assert not LookupSecretStrategy.second_factor_ready(identity)

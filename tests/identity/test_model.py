"""``Identity.public_view``: every field but the credentials and ``metadata_admin``."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from typing import Any

from sidecar.identity.model import Credential, Identity, RecoveryAddress, VerifiableAddress

_MOMENT = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _unlike_default(name: str) -> Any:
    """A value for the field ``name`` that no default has (so a field left out shows)."""
    values: dict[str, Any] = {
        "schema_id": "customer",
        "traits": {"email": "a@example.com"},
        "id": uuid.UUID(int=7),
        "state": "inactive",
        "state_changed_at": _MOMENT,
        "metadata_public": {"roles": ["x"]},
        "metadata_admin": {"note": "n"},
        "external_id": "ext",
        "organization_id": uuid.UUID(int=9),
        "verifiable_addresses": (VerifiableAddress(value="a@example.com"),),
        "recovery_addresses": (RecoveryAddress(value="a@example.com"),),
        "credentials": {"password": Credential(type="password", config={"hashed_password": "h"})},
        "created_at": _MOMENT,
        "updated_at": _MOMENT,
    }
    return values[name]


def test_the_public_view_keeps_every_field_but_credentials_and_admin_metadata() -> None:
    identity = Identity(**{f.name: _unlike_default(f.name) for f in dataclasses.fields(Identity)})
    view = identity.public_view()
    assert view == dataclasses.replace(identity, credentials={}, metadata_admin=None)
    for f in dataclasses.fields(Identity):
        if f.name not in ("credentials", "metadata_admin"):
            assert getattr(view, f.name) is getattr(identity, f.name), f.name


def test_an_identity_with_nothing_to_leave_out_is_its_own_public_view() -> None:
    identity = Identity(schema_id="default", traits={})
    assert identity.public_view() is identity
    with_admin = dataclasses.replace(identity, metadata_admin={"a": 1})
    assert with_admin.public_view().metadata_admin is None

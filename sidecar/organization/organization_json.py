"""The wire shape of an organization (Ory Network's ``Organization`` plus ``slug``)."""

from __future__ import annotations

from typing import Any

from sidecar.organization.model import Organization


def _time(value: Any) -> str:
    return str(value.isoformat()).replace("+00:00", "Z")


def organization_to_json(organization: Organization) -> dict[str, Any]:
    return {
        "id": str(organization.id),
        "label": organization.label,
        "slug": organization.slug,
        "domains": list(organization.domains),
        "created_at": _time(organization.created_at),
        "updated_at": _time(organization.updated_at),
    }

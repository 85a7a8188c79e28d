"""SCIM User attributes -> identity fields (``scim.attributes``, per organization
``scim.organizations.<slug or id>.attributes``; docs/SSO.md "Attribute mapping").

The names were checked when the configuration loaded (``SCIM_SOURCE_ATTRIBUTES``). Each write sets
every mapped field from the User as it now is: an attribute the User no longer has removes its field,
so a SCIM ``PATCH remove`` reaches the identity. Fields nobody mapped are left as they are.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sidecar.config.model import SCIM_ENTERPRISE, ScimConfig

Fields = dict[str, dict[str, Any]]
"""``traits``, ``metadata_public`` and ``metadata_admin`` of an identity, as plain objects."""


def _primary(values: Any) -> Any:
    """The primary (else the first) ``value`` of a multi-valued attribute."""
    items = (
        [v for v in values if isinstance(v, Mapping) and v.get("value") is not None]
        if isinstance(values, list)
        else []
    )
    items.sort(key=lambda v: not v.get("primary"))
    return items[0]["value"] if items else None


def scim_value(user: Mapping[str, Any], name: str) -> Any:
    """The value of attribute ``name`` (a ``SCIM_SOURCE_ATTRIBUTES`` name) in ``user``; None when absent."""
    if name in ("emails", "phoneNumbers"):
        return _primary(user.get(name))
    if name.startswith(f"{SCIM_ENTERPRISE}:"):
        extension = user.get(SCIM_ENTERPRISE)
        value = extension.get(name.rpartition(":")[2]) if isinstance(extension, Mapping) else None
        return value.get("value") if isinstance(value, Mapping) else value
    if name.startswith("name."):
        parts = user.get("name")
        return parts.get(name.removeprefix("name.")) if isinstance(parts, Mapping) else None
    return user.get(name)


def _set(node: dict[str, Any], path: list[str], value: Any) -> None:
    """Set ``value`` at ``path`` (None: remove it, and the objects it leaves empty)."""
    key, rest = path[0], path[1:]
    if not rest:
        if value is None:
            node.pop(key, None)
        else:
            node[key] = value
        return
    child = node.get(key)
    if not isinstance(child, dict):
        if value is None:
            return
        child = node[key] = {}
    _set(child, rest, value)
    if not child:
        del node[key]


class AttributeMapping:
    def __init__(self, config: ScimConfig) -> None:
        self._default = dict(config.attributes)
        self._by_org = {key: dict(o.attributes) for key, o in config.organizations.items()}

    def for_organization(self, organization_id: str, slug: str | None) -> Mapping[str, str]:
        """The organization's own mapping (named by id or slug), else the global one."""
        for key in (organization_id.lower(), slug):
            if key is not None and key in self._by_org:
                return self._by_org[key]
        return self._default

    @staticmethod
    def apply(mapping: Mapping[str, str], user: Mapping[str, Any], fields: Fields) -> Fields:
        """``fields`` with every mapped field set from ``user`` (copies; the input is not changed)."""
        out: Fields = {k: _copy(v) for k, v in fields.items()}
        for source, target in mapping.items():
            section, *path = target.split(".")
            _set(out[section], path, scim_value(user, source))
        return out


def _copy(value: dict[str, Any]) -> dict[str, Any]:
    return {k: _copy(v) if isinstance(v, dict) else v for k, v in value.items()}

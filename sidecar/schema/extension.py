"""Reading the ``ory.sh/kratos`` extension out of an identity schema (kratos-api.md §8).

The schema is walked once, at load time, into a flat list of ``TraitField``s (dotted path plus the
extension found on that property), so reading identifiers or addresses for a set of traits is a
loop over a short list, not a schema walk per request. Local ``$ref``s (``#/...``) are followed;
arrays whose ``items`` carry the extension yield one value per element, as in Kratos.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

EXTENSION_KEY = "ory.sh/kratos"
_MAX_DEPTH = 32  # a schema nesting traits deeper than this is not a person


@dataclass(frozen=True, slots=True)
class TraitField:
    """One leaf trait, for validation readers and for building ``traits.<path>`` UI nodes."""

    path: str
    title: str | None
    type: str
    format: str | None = None
    required: bool = False
    identifier_for: tuple[str, ...] = ()
    """Credential types (``password``, ``webauthn``, ``code``) this trait identifies."""
    extension: Mapping[str, Any] = field(default_factory=dict)
    is_array: bool = False
    schema: Mapping[str, Any] = field(default_factory=dict)


def _resolve(node: Any, root: Mapping[str, Any]) -> Any:
    seen = 0
    while isinstance(node, dict) and isinstance(node.get("$ref"), str) and node["$ref"].startswith("#"):
        target: Any = root
        for part in node["$ref"][1:].split("/")[1:]:
            part = part.replace("~1", "/").replace("~0", "~")
            target = target.get(part) if isinstance(target, dict) else None
        if not isinstance(target, dict):
            raise ValueError(f"unresolvable $ref {node['$ref']!r}")
        # Keywords beside a $ref (title, the extension) apply too (draft 2019-09 and later).
        siblings = {k: v for k, v in node.items() if k != "$ref"}
        node, seen = {**target, **siblings}, seen + 1
        if seen > _MAX_DEPTH:
            raise ValueError("$ref cycle")
    return node


def _type_of(node: Mapping[str, Any]) -> str:
    kind = node.get("type", "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    return str(kind)


def _identifier_types(ext: Mapping[str, Any]) -> tuple[str, ...]:
    creds = ext.get("credentials")
    if not isinstance(creds, dict):
        return ()
    return tuple(
        name for name, conf in creds.items() if isinstance(conf, dict) and conf.get("identifier") is True
    )


def _walk(
    node: Any, root: Mapping[str, Any], prefix: str, required: bool, depth: int
) -> Iterator[TraitField]:
    node = _resolve(node, root)
    if not isinstance(node, dict) or depth > _MAX_DEPTH:
        return
    if _type_of(node) == "object" or "properties" in node:
        needed = set(node.get("required") or [])
        for name, child in (node.get("properties") or {}).items():
            path = f"{prefix}.{name}" if prefix else name
            yield from _walk(child, root, path, name in needed, depth + 1)
        return
    is_array = _type_of(node) == "array"
    leaf = _resolve(node.get("items", {}), root) if is_array else node
    if not isinstance(leaf, dict):
        leaf = {}
    ext = node.get(EXTENSION_KEY) or leaf.get(EXTENSION_KEY) or {}
    yield TraitField(
        path=prefix,
        title=node.get("title") or leaf.get("title"),
        type=_type_of(node),
        format=leaf.get("format"),
        required=required,
        identifier_for=_identifier_types(ext),
        extension=ext,
        is_array=is_array,
        schema=node,
    )


def trait_fields(document: Mapping[str, Any]) -> list[TraitField]:
    """The leaf traits of a schema document, in declaration order."""
    traits = _resolve((document.get("properties") or {}).get("traits", {}), document)
    if not isinstance(traits, dict):
        return []
    return list(_walk(traits, document, "", False, 0))


def values_at(traits: Mapping[str, Any], trait: TraitField) -> list[str]:
    """The string value(s) of ``trait`` in ``traits`` (empty when absent or not a string)."""
    node: Any = traits
    for part in trait.path.split("."):
        if not isinstance(node, dict) or part not in node:
            return []
        node = node[part]
    items = node if isinstance(node, list) else [node]
    return [v for v in items if isinstance(v, str) and v.strip()]

"""Traits as UI nodes and trait validation as node messages, shared by ``profile`` and ``password``.

Nodes are named ``traits.<path>``, labelled with the schema ``title`` (message 1070002) and typed
from the schema ``format``/``type`` (kratos-api.md §3.4).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sidecar import errors
from sidecar.flows import messages
from sidecar.flows.messages import Text
from sidecar.flows.nodes import Group, InputType, Node, input_node
from sidecar.flows.outcome import FlowInvalid
from sidecar.identity.login_hints import LoginHints, hints_text
from sidecar.schema.extension import TraitField
from sidecar.schema.model import IdentitySchema
from sidecar.schema.violations import TraitsInvalid

_FORMAT_TYPES: dict[str, InputType] = {
    "email": "email",
    "tel": "tel",
    "date": "date",
    "uri": "url",
    "url": "url",
}
_TYPE_TYPES: dict[str, InputType] = {"number": "number", "integer": "number", "boolean": "checkbox"}
_AUTOCOMPLETE = {"email": "email", "tel": "tel", "url": "url"}


def _input_type(f: TraitField) -> InputType:
    if f.format and f.format in _FORMAT_TYPES:
        return _FORMAT_TYPES[f.format]
    return _TYPE_TYPES.get(f.type, "text")


def trait_nodes(schema: IdentitySchema, group: Group) -> list[Node]:
    out: list[Node] = []
    for f in schema.trait_fields():
        if f.is_array:
            continue
        kind = _input_type(f)
        pattern = f.schema.get("pattern")
        maxlength = f.schema.get("maxLength")
        out.append(
            input_node(
                f"traits.{f.path}",
                group,
                kind,
                required=f.required,
                autocomplete=_AUTOCOMPLETE.get(kind),
                label=messages.label_trait(f.title or f.path),
                pattern=pattern if isinstance(pattern, str) else None,
                maxlength=maxlength if isinstance(maxlength, int) else None,
            )
        )
    return out


def flatten(traits: Any, prefix: str = "traits") -> dict[str, Any]:
    """``{"name": {"first": "A"}}`` → ``{"traits.name.first": "A"}`` for re-filling nodes."""
    if not isinstance(traits, Mapping):
        return {}
    out: dict[str, Any] = {}
    for key, value in traits.items():
        path = f"{prefix}.{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, path))
        elif isinstance(value, str | int | float | bool):
            out[path] = value
    return out


def _texts(exc: errors.ValidationError) -> dict[str, list[Text]]:
    """Node name → messages: the schema's violations with their Kratos ids, any other refusal as
    the generic 4000001 with its reason."""
    if isinstance(exc, TraitsInvalid):
        return {path: [messages.schema_violation(v) for v in found] for path, found in exc.violations.items()}
    found_texts = exc.messages or {"traits": [exc.reason or exc.message]}
    return {path: [messages.generic(m) for m in texts] for path, texts in found_texts.items()}


def validation_messages(schema: IdentitySchema, traits: Any) -> dict[str, list[Text]]:
    """Node name → messages for every schema violation (empty when the traits are valid)."""
    try:
        schema.validate_traits(traits)
    except errors.ValidationError as exc:
        return _texts(exc)
    return {}


def traits_refused(exc: errors.Conflict | errors.ValidationError, kept: dict[str, Any]) -> FlowInvalid:
    """The store refused the traits: a duplicate is one message, a validation error sits at the
    fields it names (or at ``traits``)."""
    if isinstance(exc, errors.DuplicateCredentials) and exc.hints:
        reason = hints_text(LoginHints(**exc.hints))
        return FlowInvalid([messages.duplicate_credentials_with_hints(reason, exc.hints)], values=kept)
    if isinstance(exc, errors.Conflict):
        return FlowInvalid([messages.duplicate_credentials()], values=kept)
    return FlowInvalid(node_messages=_texts(exc), values=kept)

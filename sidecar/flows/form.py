"""Form submissions read as Kratos' decoder reads them.

Kratos decodes an ``application/x-www-form-urlencoded`` (or query-string) submission against the
identity schema (ory/x ``decoderx/http.go``, ``decodeURLValues``): only ``traits.<path>`` names the
schema knows are kept, an empty string is dropped (so an optional trait left empty is absent and
its ``minLength`` or ``format`` cannot fail), an empty optional number or boolean is dropped, an
empty required one becomes ``0`` or ``false``, and numbers and booleans are parsed (a value that
does not parse is kept as sent, for the schema to refuse). JSON bodies keep their ``traits`` object
as sent, as in Kratos.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sidecar.schema.extension import TraitField
from sidecar.schema.model import IdentitySchema

_TRUE = {"1", "t", "T", "TRUE", "true", "True"}  # Go's strconv.ParseBool
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


class FormBody(dict[str, Any]):
    """A submission that arrived as form fields: the nested values plus the (name, value) pairs
    as sent, which the schema-aware decoding needs (a checkbox sends two values, the last wins)."""

    def __init__(self, nested: Mapping[str, Any], pairs: Sequence[tuple[str, str]]) -> None:
        super().__init__(nested)
        self.pairs = tuple(pairs)


def _number(text: str, kind: str) -> Any:
    try:
        value = float(text)
    except ValueError:
        return text
    if kind == "integer" and value.is_integer():
        return int(value)
    return value


def _boolean(text: str) -> Any:
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    return text


def _scalar(f: TraitField, values: list[str]) -> tuple[bool, Any]:
    """(keep?, value) of one leaf trait from its submitted values."""
    if f.type in ("number", "integer"):
        text = values[0]
        if not text:
            return f.required, 0
        return True, _number(text, f.type)
    if f.type == "boolean":
        text = values[-1]
        if not text:
            return f.required, False
        return True, _boolean(text)
    return bool(values[0]), values[0]


def _array(f: TraitField, values: list[str]) -> list[Any]:
    items = f.schema.get("items")
    kind = items.get("type") if isinstance(items, Mapping) else None
    if kind in ("number", "integer"):
        return [_number(v, str(kind)) for v in values]
    if kind == "boolean":
        return [_boolean(v) for v in values]
    return list(values)


def form_traits(schema: IdentitySchema, pairs: Sequence[tuple[str, str]]) -> dict[str, Any] | None:
    """The traits of a form submission, typed and pruned by ``schema``; None when no
    ``traits.*`` field was sent at all."""
    sent: dict[str, list[str]] = {}
    for name, text in pairs:
        if name.startswith("traits."):
            sent.setdefault(name[len("traits.") :], []).append(text)
    if not sent:
        return None
    traits: dict[str, Any] = {}
    for f in schema.trait_fields():
        values = sent.get(f.path)
        if not values:
            continue
        value: Any
        if f.is_array:
            keep, value = True, _array(f, values)
        else:
            keep, value = _scalar(f, values)
        if not keep:
            continue
        node = traits
        *parents, leaf = f.path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return traits


def decode_submission(schema: IdentitySchema, body: Mapping[str, Any]) -> Mapping[str, Any]:
    """``body`` with its traits decoded as Kratos decodes form traits (JSON bodies unchanged)."""
    if not isinstance(body, FormBody):
        return body
    traits = form_traits(schema, body.pairs)
    out = {k: v for k, v in body.items() if k != "traits"}
    if traits is not None:
        out["traits"] = traits
    return out

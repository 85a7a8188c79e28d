"""The traits of an identity as form fields generated from its identity schema, and back.

Every leaf trait becomes one field (``traits.<dotted path>``): strings by their ``format``
(email, tel, url, date), ``enum``s as a choice, numbers and integers as numbers, booleans as a
checkbox, arrays of strings as one value per line. The posted form is turned back into traits on
top of the current ones, so a trait the form cannot show is kept as it was; the result is then
validated by the identity manager exactly as an API write is.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sidecar.i18n import N_, Phrase
from sidecar.schema.extension import TraitField
from sidecar.schema.model import IdentitySchema

TRAIT_LABEL = "1070002"
"""Kratos' id of a trait's label: a schema title is translated with this ``msgctxt`` (README)."""

_FORMAT_TYPES = {
    "email": "email",
    "idn-email": "email",
    "tel": "tel",
    "uri": "url",
    "url": "url",
    "date": "date",
}


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    """The form name, ``traits.<path>``."""
    path: str
    label: str | Phrase
    """The schema's ``title`` (translated as the self-service pages translate trait labels, by
    ``msgctxt "1070002"``) or else the trait's path."""
    widget: str
    """``input``, ``select``, ``checkbox`` or ``lines``."""
    input_type: str = "text"
    required: bool = False
    choices: tuple[str, ...] = ()
    value: str = ""
    checked: bool = False
    step: str | None = None
    pattern: str | None = None
    maxlength: int | None = None
    identifier: bool = False
    """The trait identifies a credential (a sign-in name)."""


def _leaf(traits: Any, path: str) -> Any:
    node = traits
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _items_schema(f: TraitField) -> Mapping[str, Any]:
    items = f.schema.get("items")
    return items if isinstance(items, Mapping) else {}


def _editable(f: TraitField) -> bool:
    if not f.is_array:
        return f.type in ("string", "number", "integer", "boolean")
    return bool(_items_schema(f).get("type", "string") == "string")


def fields(schema: IdentitySchema, traits: Mapping[str, Any] | None = None) -> list[Field]:
    """The form fields of ``schema``, filled from ``traits`` (or empty for a new identity)."""
    out: list[Field] = []
    for f in schema.trait_fields():
        if not _editable(f):
            continue
        value = _leaf(traits, f.path) if traits is not None else None
        label: str | Phrase = Phrase(f.title, context=TRAIT_LABEL) if f.title else f.path
        common: dict[str, Any] = {
            "name": f"traits.{f.path}",
            "path": f.path,
            "label": label,
            "required": f.required,
            "identifier": bool(f.identifier_for),
        }
        if f.is_array:
            lines = "\n".join(str(v) for v in value) if isinstance(value, list) else ""
            out.append(Field(widget="lines", value=lines, **common))
            continue
        enum = f.schema.get("enum")
        if f.type == "boolean":
            out.append(Field(widget="checkbox", checked=value is True, **common))
        elif isinstance(enum, list) and all(isinstance(e, str) for e in enum):
            out.append(Field(widget="select", choices=tuple(enum), value=str(value or ""), **common))
        elif f.type in ("number", "integer"):
            shown = "" if value is None or isinstance(value, bool) else str(value)
            step = "1" if f.type == "integer" else "any"
            out.append(Field(widget="input", input_type="number", step=step, value=shown, **common))
        else:
            pattern = f.schema.get("pattern")
            maxlength = f.schema.get("maxLength")
            out.append(
                Field(
                    widget="input",
                    input_type=_FORMAT_TYPES.get(f.format or "", "text"),
                    value=value if isinstance(value, str) else "",
                    pattern=pattern if isinstance(pattern, str) else None,
                    maxlength=maxlength if isinstance(maxlength, int) else None,
                    **common,
                )
            )
    return out


def _set(traits: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    node = traits
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    if value is None:
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = value


def _prune(node: dict[str, Any]) -> dict[str, Any]:
    """Objects the form emptied are removed, as if the trait had never been given."""
    for key in list(node):
        value = node[key]
        if isinstance(value, dict):
            _prune(value)
            if not value:
                del node[key]
    return node


def read(
    schema: IdentitySchema, form: Mapping[str, str], current: Mapping[str, Any] | None
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """Traits from a posted form on top of ``current``, and per-field problems of type.

    An empty field removes the trait (the schema then says whether it was required). A number that
    is not one is reported at its field; everything else is the schema validator's job.
    """
    traits: dict[str, Any] = copy.deepcopy(dict(current or {}))
    problems: dict[str, list[str]] = {}
    for f in fields(schema):
        raw = form.get(f.name)
        if f.widget == "checkbox":
            _set(traits, f.path, raw is not None and raw != "")
            continue
        if raw is None:
            continue
        if f.widget == "lines":
            values = [line.strip() for line in raw.splitlines() if line.strip()]
            _set(traits, f.path, values or None)
            continue
        text = raw.strip() if f.input_type != "text" else raw
        if text.strip() == "":
            _set(traits, f.path, None)
            continue
        if f.input_type == "number":
            try:
                number = float(text) if f.step == "any" else int(text)
                if isinstance(number, float) and not math.isfinite(number):
                    raise ValueError(text)
            except ValueError:
                problems.setdefault(f.name, []).append(
                    N_("must be a whole number") if f.step == "1" else N_("must be a number")
                )
                continue
            if (
                isinstance(number, float)
                and number.is_integer()
                and "." not in text
                and "e" not in text.lower()
            ):
                number = int(number)
            _set(traits, f.path, number)
            continue
        _set(traits, f.path, text)
    return _prune(traits), problems

"""Header value templates over the identity and session, compiled once when rules load.

Syntax (proxy-conventions.md "Access rules"): literal text with ``{expr}`` or ``{{ expr }}``
placeholders, ``expr`` a dotted path rooted at ``identity`` (``id``, ``schema_id``, ``traits``,
``metadata_public``, ``email``) or ``session`` (``id``, ``aal``, ``authenticated_at``,
``expires_at``), with optional filters ``|join(',')``, ``|lower``, ``|upper``. ``traits.x`` and
``metadata_public.x`` are short for ``identity.traits.x``. A missing value renders as empty.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}|\{([^{}]*)\}")
_FILTER = re.compile(r"^(join|lower|upper)(?:\(\s*(?:'([^']*)'|\"([^\"]*)\")\s*\))?$")
_ROOTS = {"identity", "session"}
_SHORTHAND = {"traits", "metadata_public"}


class TemplateError(ValueError):
    """A template does not compile; the message names the problem."""


def _stringify(value: Any, sep: str = ",") -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    if isinstance(value, list | tuple):
        return sep.join(_stringify(v) for v in value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


@dataclass(frozen=True, slots=True)
class _Expr:
    path: tuple[str, ...]
    filters: tuple[Callable[[Any], Any], ...]

    def render(self, context: Mapping[str, Any]) -> str:
        value: Any = context
        for key in self.path:
            if isinstance(value, Mapping):
                value = value.get(key)
            else:
                value = None
                break
        for f in self.filters:
            value = f(value)
        return _stringify(value)


def _compile_filter(text: str) -> Callable[[Any], Any]:
    m = _FILTER.match(text.strip())
    if not m:
        raise TemplateError(f"unknown filter {text.strip()!r} (use join(','), lower or upper)")
    name, sep = m.group(1), m.group(2) if m.group(2) is not None else (m.group(3) or ",")
    if name == "join":
        return lambda v: _stringify(v, sep)
    if name == "lower":
        return lambda v: _stringify(v).lower()
    return lambda v: _stringify(v).upper()


def _compile_expr(text: str) -> _Expr:
    head, *filters = text.split("|")
    path = tuple(p for p in head.strip().split("."))
    if not path or any(not p for p in path):
        raise TemplateError(f"empty or malformed path in {{{text}}}")
    if path[0] in _SHORTHAND:
        path = ("identity", *path)
    if path[0] not in _ROOTS:
        raise TemplateError(
            f"{head.strip()!r} must start with identity., session., traits. or metadata_public."
        )
    return _Expr(path, tuple(_compile_filter(f) for f in filters))


@dataclass(frozen=True, slots=True)
class Template:
    source: str
    parts: tuple[str | _Expr, ...]

    def render(self, context: Mapping[str, Any]) -> str:
        return "".join(p if isinstance(p, str) else p.render(context) for p in self.parts)


def compile_template(source: str) -> Template:
    parts: list[str | _Expr] = []
    pos = 0
    for m in _PLACEHOLDER.finditer(source):
        if m.start() > pos:
            parts.append(source[pos : m.start()])
        parts.append(_compile_expr(m.group(1) if m.group(1) is not None else m.group(2)))
        pos = m.end()
    if pos < len(source):
        parts.append(source[pos:])
    if any(isinstance(p, str) and ("{" in p or "}" in p) for p in parts):
        raise TemplateError("unbalanced '{' or '}'")
    return Template(source, tuple(parts))

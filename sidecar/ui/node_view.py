"""Kratos UI nodes (kratos-api.md §3.4) as values the templates draw without logic.

Each node gets its HTML element and only what is safe to echo: never a password value, no foreign
script, no ``javascript:`` link. Flows are foreign JSON, so every field is checked, never trusted.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

_INPUT_TYPES = frozenset(
    {"text", "password", "number", "email", "tel", "date", "datetime-local", "url", "search", "time"}
)
_DOM_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_.:-]")
_DATA_KEY = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_TRIGGER = re.compile(r"^ory[A-Za-z]+$")


@dataclass(frozen=True)
class Message:
    """A ``uiText``: ``type`` is ``info``, ``error`` or ``success``."""

    id: int | None
    text: str
    type: str


@dataclass(frozen=True)
class Node:
    """One node, ready to draw. ``kind`` picks the template macro."""

    kind: str  # hidden, input, checkbox, submit, button, text, codes, img, a, script, div
    group: str
    name: str
    dom_id: str
    label: str
    messages: tuple[Message, ...] = ()
    input_type: str = "text"
    value: str | None = None
    required: bool = False
    disabled: bool = False
    checked: bool = False
    autocomplete: str | None = None
    pattern: str | None = None
    maxlength: int | None = None
    novalidate: bool = False
    trigger_click: str | None = None
    trigger_load: str | None = None
    text: str = ""
    codes: tuple[str, ...] = ()
    src: str = ""
    href: str = ""
    width: int | None = None
    height: int | None = None
    script_async: bool = False
    crossorigin: str | None = None
    integrity: str | None = None
    referrerpolicy: str | None = None
    script_type: str | None = None
    css_class: str | None = None
    data: tuple[tuple[str, str], ...] = ()

    @property
    def has_error(self) -> bool:
        return any(m.type == "error" for m in self.messages)


def as_mapping(value: Any) -> Mapping[str, Any]:
    """``value`` when it is a JSON object, else an empty one: flows are foreign JSON, never trusted."""
    return value if isinstance(value, Mapping) else {}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def messages_of(raw: Any) -> tuple[Message, ...]:
    """``uiText`` list → messages; tolerant of missing fields (a flow is foreign JSON)."""
    if not isinstance(raw, list):
        return ()
    out = []
    for item in raw:
        if not isinstance(item, Mapping):
            continue
        kind = item.get("type")
        out.append(
            Message(
                id=item.get("id") if isinstance(item.get("id"), int) else None,
                text=str(item.get("text") or ""),
                type=kind if kind in ("info", "error", "success") else "info",
            )
        )
    return tuple(out)


def _text_of(raw: Any) -> str:
    if isinstance(raw, Mapping):
        return str(raw.get("text") or "")
    return ""


def safe_href(url: Any) -> str | None:
    """http(s) or relative URLs only: a ``javascript:`` or ``data:`` link never reaches an href."""
    if not isinstance(url, str) or not url:
        return None
    parts = urlsplit(url.strip())
    if parts.scheme in ("http", "https") or (not parts.scheme and not url.strip().startswith("//")):
        return url.strip()
    return None


def same_origin_check(public_base_url: str) -> Callable[[str], bool]:
    """A predicate: is ``url`` relative or on the public base URL's origin?"""
    base = urlsplit(public_base_url)
    origin = (base.scheme, base.netloc.lower())

    def check(url: str) -> bool:
        parts = urlsplit(url)
        if not parts.scheme and not parts.netloc:
            return not url.startswith("//")
        return (parts.scheme, parts.netloc.lower()) == origin

    return check


class DomIds:
    """DOM ids unique within a page, so every ``<label for>`` points at exactly one input."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.seen: set[str] = set()

    def make(self, name: str) -> str:
        base = self.prefix + (_DOM_ID_UNSAFE.sub("-", name) or "node")
        candidate, n = base, 1
        while candidate in self.seen:
            n += 1
            candidate = f"{base}-{n}"
        self.seen.add(candidate)
        return candidate


def _input_node(raw: Mapping[str, Any], attrs: Mapping[str, Any], group: str, ids: DomIds) -> Node:
    name = str(attrs.get("name") or "")
    input_type = str(attrs.get("type") or "text")
    label = _text_of((raw.get("meta") or {}).get("label")) or _text_of(attrs.get("label")) or name
    value = attrs.get("value")
    common: dict[str, Any] = {
        "group": group,
        "name": name,
        "label": label,
        "messages": messages_of(raw.get("messages")),
        "disabled": bool(attrs.get("disabled")),
        "trigger_click": _trigger(attrs.get("onclickTrigger")),
        "trigger_load": _trigger(attrs.get("onloadTrigger")),
    }
    if input_type == "hidden":
        return Node(kind="hidden", dom_id="", value=_str_value(value), **common)
    if input_type in ("submit", "button"):
        return Node(kind=input_type, dom_id=ids.make(f"{name}-{value}"), value=_str_value(value), **common)
    if input_type == "checkbox":
        return Node(
            kind="checkbox",
            dom_id=ids.make(name),
            checked=value is True or value == "true",
            required=bool(attrs.get("required")),
            **common,
        )
    maxlength = attrs.get("maxlength")
    return Node(
        kind="input",
        dom_id=ids.make(name),
        input_type=input_type if input_type in _INPUT_TYPES else "text",
        # A password typed by the user is never echoed back into the page, whatever the flow says.
        value=None if input_type == "password" else _str_value(value),
        required=bool(attrs.get("required")),
        autocomplete=str(attrs["autocomplete"]) if attrs.get("autocomplete") else None,
        pattern=str(attrs["pattern"]) if attrs.get("pattern") else None,
        maxlength=maxlength if isinstance(maxlength, int) and not isinstance(maxlength, bool) else None,
        **common,
    )


def _str_value(value: Any) -> str | None:
    if value is None or isinstance(value, Mapping | list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _trigger(name: Any) -> str | None:
    # Only Kratos' own helper names (oryWebAuthnLogin, oryPasskeyRegistration, ...) may be called.
    return name if isinstance(name, str) and _TRIGGER.match(name) else None


def _other_node(
    raw: Mapping[str, Any],
    attrs: Mapping[str, Any],
    kind: str,
    group: str,
    same_origin: Callable[[str], bool],
) -> Node | None:
    node_id = str(attrs.get("id") or "")
    label = _text_of((raw.get("meta") or {}).get("label"))
    common: dict[str, Any] = {
        "group": group,
        "name": node_id,
        "dom_id": node_id,
        "label": label,
        "messages": messages_of(raw.get("messages")),
    }
    if kind == "text":
        text = as_mapping(attrs.get("text"))
        secrets = (text.get("context") or {}).get("secrets")
        if isinstance(secrets, list):
            codes = tuple(_text_of(s) for s in secrets if isinstance(s, Mapping))
            return Node(kind="codes", codes=codes, text=_text_of(text), **common)
        return Node(kind="text", text=_text_of(text), **common)
    if kind == "img":
        src = str(attrs.get("src") or "")
        if not (src.startswith("data:image/") or same_origin(src)):
            return None
        return Node(
            kind="img", src=src, width=_int(attrs.get("width")), height=_int(attrs.get("height")), **common
        )
    if kind == "a":
        href = safe_href(attrs.get("href"))
        if href is None:
            return None
        return Node(kind="a", href=href, text=_text_of(attrs.get("title")) or href, **common)
    if kind == "script":
        # CSP allows only same-origin scripts; a foreign one would be blocked anyway, so omit it.
        src = str(attrs.get("src") or "")
        if not src or not same_origin(src):
            return None
        return Node(
            kind="script",
            src=src,
            script_async=bool(attrs.get("async")),
            crossorigin=str(attrs["crossorigin"]) if attrs.get("crossorigin") else None,
            integrity=str(attrs["integrity"]) if attrs.get("integrity") else None,
            referrerpolicy=str(attrs["referrerpolicy"]) if attrs.get("referrerpolicy") else None,
            script_type=str(attrs["type"]) if attrs.get("type") else None,
            **common,
        )
    if kind == "div":
        data = as_mapping(attrs.get("data"))
        pairs = tuple((str(k), str(v)) for k, v in data.items() if _DATA_KEY.match(str(k)))
        css = attrs.get("class")
        return Node(kind="div", css_class=str(css) if css else None, data=pairs, **common)
    return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def convert_nodes(raw_nodes: Iterable[Any], ids: DomIds, same_origin: Callable[[str], bool]) -> list[Node]:
    nodes = []
    for raw in raw_nodes:
        if not isinstance(raw, Mapping):
            continue
        attrs = as_mapping(raw.get("attributes"))
        kind = str(raw.get("type") or attrs.get("node_type") or "")
        group = str(raw.get("group") or "default")
        node = (
            _input_node(raw, attrs, group, ids)
            if kind == "input"
            else _other_node(raw, attrs, kind, group, same_origin)
        )
        if node is not None:
            nodes.append(node)
    return nodes

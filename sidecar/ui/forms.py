"""The forms of a flow page: nodes sorted into method groups, in the order people read them.

The pages never know which strategies exist: they draw whatever ``ui.nodes`` holds, like Ory's own
UIs, so a new strategy's group appears without template changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sidecar.ui.node_view import DomIds, Message, Node, as_list, convert_nodes, safe_href
from sidecar.ui.wording import GROUP_HEADINGS

# Kratos' group order as users expect to read a form: the shared inputs, first-factor methods,
# social sign-in, then second factors. Groups not listed (future strategies) go last, in flow order.
GROUP_ORDER = (
    "default",
    "identifier_first",
    "captcha",
    "profile",
    "password",
    "oidc",
    "saml",
    "code",
    "link",
    "totp",
    "lookup_secret",
    "webauthn",
    "passkey",
)

# Buttons that move between a flow's screens rather than submit a method (two-step registration's
# ``screen=previous``): drawn last, after the methods, and never an alternative to them.
_NAVIGATION = frozenset({"screen"})

# Groups whose submit buttons need none of the default-group inputs (e.g. the identifier).
_STANDALONE_GROUPS = frozenset({"oidc", "saml"})


@dataclass(frozen=True)
class Section:
    group: str
    nodes: tuple[Node, ...]

    @property
    def has_submit(self) -> bool:
        """Whether the section is a way to submit (a method), for the "or" between methods."""
        return any(n.kind in ("submit", "button") and n.name not in _NAVIGATION for n in self.nodes)


@dataclass(frozen=True)
class Form:
    action: str
    method: str
    heading: str | None
    hidden: tuple[Node, ...]
    sections: tuple[Section, ...]
    messages: tuple[Message, ...] = ()


def _group_rank(group: str) -> int:
    try:
        return GROUP_ORDER.index(group)
    except ValueError:
        return len(GROUP_ORDER)


def _with_novalidate(nodes: Sequence[Node]) -> list[Node]:
    """Let a method's button submit although another method's inputs are empty.

    One form holds every method (password, code, social sign-in); the browser's ``required`` check
    would otherwise block "send me a code" until a password is typed. The server validates anyway.
    """
    out = []
    for node in nodes:
        if node.kind == "submit":
            needed = {node.group} if node.group in _STANDALONE_GROUPS else {node.group, "default"}
            # Buttons other than ``method`` (resend, provider, unlink, ...) need no typed input.
            blocking = node.name != "method" or any(
                n.required and n.kind in ("input", "checkbox") and n.group not in needed for n in nodes
            )
            if blocking:
                node = Node(**{**node.__dict__, "novalidate": True})
        out.append(node)
    return out


def _sections(nodes: Sequence[Node]) -> tuple[Section, ...]:
    by_group: dict[str, list[Node]] = {}
    navigation = [n for n in nodes if n.name in _NAVIGATION]
    for node in sorted(nodes, key=lambda n: _group_rank(n.group)):  # stable: flow order within a group
        if node.name not in _NAVIGATION:
            by_group.setdefault(node.group, []).append(node)
    sections = [Section(group=g, nodes=tuple(ns)) for g, ns in by_group.items()]
    if navigation:
        sections.append(Section(group="navigation", nodes=tuple(navigation)))
    return tuple(sections)


def build_forms(
    ui: Mapping[str, Any], *, split_by_group: bool, same_origin: Callable[[str], bool]
) -> list[Form]:
    """The forms of a flow page: one form, or (settings) one form per method group.

    Hidden inputs of the ``default`` group (the CSRF token) go into every form.
    """
    action = safe_href(ui.get("action")) or ""
    method = "get" if str(ui.get("method") or "POST").upper() == "GET" else "post"
    raw_nodes = as_list(ui.get("nodes"))

    if not split_by_group:
        nodes = _with_novalidate(convert_nodes(raw_nodes, DomIds("f0-"), same_origin))
        return [_form(action, method, None, nodes)]

    grouped: dict[str, list[Any]] = {}
    for raw in raw_nodes:
        if isinstance(raw, Mapping):
            grouped.setdefault(str(raw.get("group") or "default"), []).append(raw)
    shared = grouped.pop("default", [])
    forms = []
    for index, group in enumerate(sorted(grouped, key=_group_rank)):
        ids = DomIds(f"f{index}-")
        nodes = _with_novalidate(convert_nodes([*shared, *grouped[group]], ids, same_origin))
        forms.append(_form(action, method, GROUP_HEADINGS.get(group, group.replace("_", " ").title()), nodes))
    if not forms and shared:
        forms.append(_form(action, method, None, convert_nodes(shared, DomIds("f0-"), same_origin)))
    return forms


def _form(action: str, method: str, heading: str | None, nodes: Sequence[Node]) -> Form:
    hidden = tuple(n for n in nodes if n.kind == "hidden")
    visible = [n for n in nodes if n.kind != "hidden"]
    # Messages on a hidden input (e.g. a rejected CSRF token) would be invisible; show them on the form.
    messages = tuple(m for n in hidden for m in n.messages)
    return Form(
        action=action,
        method=method,
        heading=heading,
        hidden=hidden,
        sections=_sections(visible),
        messages=messages,
    )

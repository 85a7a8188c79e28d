"""UI node builders in Kratos' shape (kratos-api.md §3.4; OpenAPI ``uiNode``)."""

from __future__ import annotations

from typing import Any, Literal, TypedDict

from sidecar.flows.messages import Text

Group = str
"""``default``, or the id of the strategy that owns the node (``password``, ``totp``, ...)."""
InputType = Literal[
    "text", "password", "number", "checkbox", "hidden", "email", "tel", "submit", "button", "date", "url"
]


class NodeMeta(TypedDict, total=False):
    label: Text


class Node(TypedDict):
    type: str
    group: str
    attributes: dict[str, Any]
    messages: list[Text]
    meta: NodeMeta


def input_node(
    name: str,
    group: Group,
    type_: InputType,
    *,
    value: Any = None,
    required: bool = False,
    autocomplete: str | None = None,
    label: Text | None = None,
    pattern: str | None = None,
    maxlength: int | None = None,
) -> Node:
    attributes: dict[str, Any] = {"name": name, "type": type_}
    if value is not None:
        attributes["value"] = value
    if required:
        attributes["required"] = True
    if autocomplete:
        attributes["autocomplete"] = autocomplete
    if pattern:
        attributes["pattern"] = pattern
    if maxlength is not None:
        attributes["maxlength"] = maxlength
    attributes["disabled"] = False
    attributes["node_type"] = "input"
    meta: NodeMeta = {"label": label} if label else {}
    return {"type": "input", "group": group, "attributes": attributes, "messages": [], "meta": meta}


def csrf_node() -> Node:
    """The value is filled in (masked afresh) when the flow is rendered."""
    return input_node("csrf_token", "default", "hidden", required=True, value="")


def submit_node(method: str, group: Group, label: Text) -> Node:
    return input_node("method", group, "submit", value=method, label=label)


def set_value(nodes: list[Node], name: str, value: Any) -> None:
    for node in nodes:
        if node["attributes"].get("name") == name:
            if value is None:
                node["attributes"].pop("value", None)
            else:
                node["attributes"]["value"] = value


def add_message(nodes: list[Node], name: str, message: Text) -> bool:
    for node in nodes:
        if node["attributes"].get("name") == name:
            node["messages"].append(message)
            return True
    return False


def clear_messages(nodes: list[Node]) -> None:
    for node in nodes:
        node["messages"] = []

"""Identity schemas for tests: an ``email`` trait that signs in by password, plus the traits a test needs."""

from __future__ import annotations

from typing import Any


def person_schema(
    *,
    email_title: str | None = None,
    email_for: tuple[str, ...] = ("recovery", "verification"),
    closed: bool = False,
    **traits: Any,
) -> dict[str, Any]:
    """``traits.email`` is the password identifier and the address of each of ``email_for``
    (``recovery``, ``verification``); ``traits`` adds properties; ``closed`` refuses any other trait."""
    extension: dict[str, Any] = {"credentials": {"password": {"identifier": True}}}
    extension |= {flow: {"via": "email"} for flow in email_for}
    email: dict[str, Any] = {"type": "string", "format": "email"}
    if email_title is not None:
        email["title"] = email_title
    email["ory.sh/kratos"] = extension
    shape: dict[str, Any] = {
        "type": "object",
        "properties": {"email": email, **traits},
        "required": ["email"],
    }
    if closed:
        shape["additionalProperties"] = False
    return {
        "$id": "https://example.test/person.schema.json",
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {"traits": shape},
    }

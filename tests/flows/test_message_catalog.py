"""Every UI message the flows can produce is in the catalog template, so it can be translated."""

from __future__ import annotations

import inspect
import typing
from datetime import timedelta
from typing import Any

import pytest

from sidecar.flows import messages
from sidecar.i18n import builtin_catalogs
from sidecar.identity.model import utcnow
from sidecar.schema import violations

_SAMPLES: dict[str, Any] = {
    "flow": "login",
    "purpose": "login",
    "retry_after": 42,
    "hints": {},
    "violation": violations.said(violations.MIN_LENGTH, min_length=8, actual_length=3),
}


def _arguments(function: Any, flow: str) -> dict[str, Any] | None:
    hints = typing.get_type_hints(function)
    out: dict[str, Any] = {}
    for name in inspect.signature(function).parameters:
        kind = hints.get(name)
        if name in ("flow", "purpose"):
            out[name] = flow
        elif name in _SAMPLES:
            out[name] = _SAMPLES[name]
        elif kind is str:
            out[name] = f"<{name}>"
        elif kind is int:
            out[name] = 7
        elif "datetime" in str(kind):
            out[name] = utcnow() - timedelta(minutes=3)
        elif "list" in str(kind):
            out[name] = []
        else:
            return None
    return out


def _produced() -> list[tuple[str, messages.Text]]:
    out = []
    for name, function in inspect.getmembers(messages, inspect.isfunction):
        if (
            function.__module__ != messages.__name__
            or name.startswith("_")
            or name
            in (
                "text",
                "localise",
                "template_of",
            )
        ):
            continue
        params = inspect.signature(function).parameters
        if "flow" not in params and "purpose" not in params:
            flows: tuple[str, ...] = ("-",)
        elif name.startswith("challenge_"):
            flows = ("recovery", "verification")
        elif name == "retry_success":
            flows = ("login", "registration", "recovery", "verification")
        else:
            flows = ("login", "registration")
        for flow in flows:
            args = _arguments(function, flow)
            if args is None:
                raise AssertionError(f"add a sample argument for messages.{name}")
            out.append((f"{name}({flow})", function(**args)))
    return out


@pytest.mark.parametrize(("call", "message"), _produced(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_message_has_a_template_for_its_id(call: str, message: messages.Text) -> None:
    if message["id"] in (4000001, 4000028, 1050006, 1050009, 1050015, messages.LABEL_TRAIT):
        return  # values (a reason, a secret, a schema title), not sentences
    assert messages.template_of(message["id"], message["text"]) is not None, call
    assert messages.localise(message, builtin_catalogs().translator("de")) != message["text"], call


def test_values_are_carried_into_the_translation() -> None:
    de = builtin_catalogs().translator("de")
    assert messages.localise(messages.rate_limited(30), de) == (
        "Zu viele Versuche, bitte warten Sie 30 Sekunden und versuchen Sie es erneut."
    )
    expired = messages.flow_expired("login", utcnow() - timedelta(minutes=3.5))
    assert "3,50 Minuten" in messages.localise(expired, de)
    assert messages.localise(messages.oidc_sign_in_with("GitHub", "github"), de) == "Mit GitHub anmelden"


def test_an_unknown_id_or_a_changed_text_stays_english() -> None:
    de = builtin_catalogs().translator("de")
    assert messages.localise(messages.text(1999999, "Something new"), de) == "Something new"
    # The id is known but the English is not one of its templates (e.g. a hook's own text).
    assert messages.localise(messages.text(4000006, "Wrong."), de) == "Wrong."
    assert messages.localise(messages.generic("a hook said no"), de) == "a hook said no"


def test_a_trait_title_is_translated_only_when_a_catalog_has_it() -> None:
    de = builtin_catalogs().translator("de")
    assert messages.localise(messages.label_trait("Favourite colour"), de) == "Favourite colour"

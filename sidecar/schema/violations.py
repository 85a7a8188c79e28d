"""A trait that breaks the identity schema, said as Kratos says it: a numeric message id, an
English text and the values in it (ory/kratos ``text/message_validation.go``; kratos-api.md §5).

Each violation is a ``Phrase`` whose context is the Kratos id and whose msgid is the English
template, so one value serves three readers: ``str()`` is the English text the JSON APIs and the
logs keep, ``phrase.params`` is the message's ``context``, and the built-in pages and the console
translate it with the catalogs (``pybabel extract -k _m:1c,2`` collects the templates below, as it
does ``sidecar.flows.messages``'). A keyword without a Kratos id (``enum``, ``not``, ...) keeps the
validator's own English under 4000001, Kratos' generic id, and is shown as it is.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jsonschema.exceptions

from sidecar import errors
from sidecar.i18n import Phrase
from sidecar.security.emails import InvalidEmail


def _m(message_id: str, template: str) -> tuple[str, str]:
    return message_id, template


# Not extracted: its text is the reason itself, said as it is in every language.
GENERIC = ("4000001", "{reason}")
NOT_AN_OBJECT = _m("4000001", "traits must be a JSON object")
INVISIBLE = _m("4000001", "the identifier has an invisible or control character")
ONE_OF = _m("4000001", "must be one of {allowed}")
REQUIRED = _m("4000002", "Property {property} is missing.")
MIN_LENGTH = _m("4000003", "length must be >= {min_length}, but got {actual_length}")
PATTERN = _m("4000004", 'does not match pattern "{pattern}"')
FORMAT = _m("4000004", '"{value}" is not valid "{format}"')
MAX_LENGTH = _m("4000017", "length must be <= {max_length}, but got {actual_length}")
MINIMUM = _m("4000018", "must be >= {minimum} but found {actual}")
EXCLUSIVE_MINIMUM = _m("4000019", "must be > {minimum} but found {actual}")
MAXIMUM = _m("4000020", "must be <= {maximum} but found {actual}")
EXCLUSIVE_MAXIMUM = _m("4000021", "must be < {maximum} but found {actual}")
MULTIPLE_OF = _m("4000022", "{actual} not multipleOf {base}")
MAX_ITEMS = _m("4000023", "maximum {max_items} items allowed, but found {actual_items} items")
MIN_ITEMS = _m("4000024", "minimum {min_items} items allowed, but found {actual_items} items")
UNIQUE_ITEMS = _m("4000025", "items at index {index_a} and {index_b} are equal")
WRONG_TYPE = _m("4000026", "expected {allowed_types}, but got {actual_type}")
CONST = _m("4000029", "must be equal to constant {expected}")
INVALID_EMAIL = _m("4000040", "The email address is invalid.")

TEMPLATES: tuple[tuple[str, str], ...] = (
    NOT_AN_OBJECT,
    INVISIBLE,
    ONE_OF,
    REQUIRED,
    MIN_LENGTH,
    PATTERN,
    FORMAT,
    MAX_LENGTH,
    MINIMUM,
    EXCLUSIVE_MINIMUM,
    MAXIMUM,
    EXCLUSIVE_MAXIMUM,
    MULTIPLE_OF,
    MAX_ITEMS,
    MIN_ITEMS,
    UNIQUE_ITEMS,
    WRONG_TYPE,
    CONST,
    INVALID_EMAIL,
)
"""Every template a violation can carry (``GENERIC`` aside: its text is a value, never translated)."""

Violations = dict[str, list[Phrase]]
"""Violations by the trait path they sit at (``traits.email``, or ``traits`` for the whole)."""


def said(message: tuple[str, str], **values: Any) -> Phrase:
    message_id, template = message
    return Phrase(template, context=message_id, **values)


def message_id(violation: Phrase) -> int:
    return int(violation.context or GENERIC[0])


class TraitsInvalid(errors.ValidationError):
    """Traits the schema refuses: ``messages`` in English (the API's ``details``), ``violations``
    as phrases with their Kratos ids, for a page in the reader's language."""

    def __init__(self, reason: str, violations: Violations) -> None:
        super().__init__(reason, messages={k: [str(v) for v in vs] for k, vs in violations.items()})
        self.violations = violations


def _json(value: Any) -> str:
    return value if isinstance(value, str) else repr(value)


_BOUNDS: dict[str, tuple[tuple[str, str], str]] = {
    "minimum": (MINIMUM, "minimum"),
    "exclusiveMinimum": (EXCLUSIVE_MINIMUM, "minimum"),
    "maximum": (MAXIMUM, "maximum"),
    "exclusiveMaximum": (EXCLUSIVE_MAXIMUM, "maximum"),
}


def violation(error: jsonschema.exceptions.ValidationError, missing: str = "") -> Phrase:
    """One validator error as Kratos' message; ``missing`` names the property a ``required`` lacks."""
    keyword, expected, instance = error.validator, error.validator_value, error.instance
    if isinstance(error.cause, InvalidEmail):
        # Kratos' 4000040; the address's own fault stays in the English context for the logs.
        return said(INVALID_EMAIL, reason=str(error.cause))
    if keyword == "required":
        return said(REQUIRED, property=missing)
    if keyword in ("minLength", "maxLength") and isinstance(instance, str):
        if keyword == "minLength":
            return said(MIN_LENGTH, min_length=expected, actual_length=len(instance))
        return said(MAX_LENGTH, max_length=expected, actual_length=len(instance))
    if keyword == "pattern":
        return said(PATTERN, pattern=expected)
    if keyword == "format":
        return said(FORMAT, format=expected, value=_json(instance))
    if keyword in _BOUNDS and isinstance(expected, int | float):
        template, name = _BOUNDS[keyword]
        return said(template, **{name: expected, "actual": instance})
    if keyword == "multipleOf":
        return said(MULTIPLE_OF, base=expected, actual=instance)
    if keyword in ("maxItems", "minItems") and isinstance(instance, list):
        if keyword == "maxItems":
            return said(MAX_ITEMS, max_items=expected, actual_items=len(instance))
        return said(MIN_ITEMS, min_items=expected, actual_items=len(instance))
    if keyword == "uniqueItems" and isinstance(instance, list):
        pair = _first_equal(instance)
        if pair is not None:
            return said(UNIQUE_ITEMS, index_a=pair[0], index_b=pair[1])
    if keyword == "type":
        allowed = expected if isinstance(expected, list) else [expected]
        return said(WRONG_TYPE, allowed_types=", ".join(map(str, allowed)), actual_type=_type_of(instance))
    if keyword == "const":
        return said(CONST, expected=_json(expected))
    if keyword == "enum" and isinstance(expected, list):
        return said(ONE_OF, allowed=", ".join(_json(v) for v in expected))
    return said(GENERIC, reason=error.message)


def _first_equal(items: list[Any]) -> tuple[int, int] | None:
    for b, later in enumerate(items):
        for a in range(b):
            if items[a] == later and type(items[a]) is type(later):
                return a, b
    return None


_TYPES: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (bool, "boolean"),
    (int, "integer"),
    (float, "number"),
    (str, "string"),
    (list, "array"),
    (Mapping, "object"),
)


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    return next((name for kind, name in _TYPES if isinstance(value, kind)), type(value).__name__)

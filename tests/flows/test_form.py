"""Form traits decoded as Kratos' decoder does (ory/x decoderx/http.go, decodeURLValues)."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.flows.form import FormBody, decode_submission, form_traits
from sidecar.schema.model import IdentitySchema

SCHEMA = IdentitySchema(
    "t",
    {
        "type": "object",
        "properties": {
            "traits": {
                "type": "object",
                "properties": {
                    "email": {"type": "string"},
                    "nick": {"type": "string"},
                    "age": {"type": "integer"},
                    "height": {"type": "number"},
                    "score": {"type": "number"},
                    "opt_in": {"type": "boolean"},
                    "terms": {"type": "boolean"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "lucky": {"type": "array", "items": {"type": "integer"}},
                    "name": {"type": "object", "properties": {"first": {"type": "string"}}},
                },
                "required": ["email", "score", "terms"],
            }
        },
    },
)


@pytest.mark.parametrize(
    ("pairs", "traits"),
    [
        pytest.param([("traits.nick", "")], {}, id="empty-string-dropped"),
        pytest.param([("traits.email", "")], {}, id="empty-required-string-dropped-too"),
        pytest.param([("traits.age", "")], {}, id="empty-optional-number-dropped"),
        pytest.param([("traits.score", "")], {"score": 0}, id="empty-required-number-is-zero"),
        pytest.param([("traits.opt_in", "")], {}, id="empty-optional-bool-dropped"),
        pytest.param([("traits.terms", "")], {"terms": False}, id="empty-required-bool-is-false"),
        pytest.param(
            [("traits.age", "7"), ("traits.height", "1.8")], {"age": 7, "height": 1.8}, id="numbers"
        ),
        pytest.param([("traits.age", "seven")], {"age": "seven"}, id="unparsable-kept-for-the-schema"),
        pytest.param(
            [("traits.opt_in", "false"), ("traits.opt_in", "true")], {"opt_in": True}, id="last-bool"
        ),
        pytest.param([("traits.opt_in", "T")], {"opt_in": True}, id="go-parsebool"),
        pytest.param([("traits.nick", "a"), ("traits.nick", "b")], {"nick": "a"}, id="first-string"),
        pytest.param([("traits.tags", "x"), ("traits.tags", "y")], {"tags": ["x", "y"]}, id="string-array"),
        pytest.param([("traits.lucky", "3"), ("traits.lucky", "4")], {"lucky": [3, 4]}, id="number-array"),
        pytest.param([("traits.name.first", "Ada")], {"name": {"first": "Ada"}}, id="nested"),
        pytest.param([("traits.name.first", "")], {}, id="nested-empty-no-parent"),
        pytest.param([("traits.unknown", "x")], {}, id="not-in-schema"),
    ],
)
def test_form_traits(pairs: list[tuple[str, str]], traits: dict[str, Any]) -> None:
    assert form_traits(SCHEMA, pairs) == traits


def test_no_traits_field_leaves_traits_absent() -> None:
    body = FormBody({"method": "password"}, [("method", "password")])
    assert decode_submission(SCHEMA, body) == {"method": "password"}


def test_json_bodies_pass_unchanged() -> None:
    body = {"method": "password", "traits": {"nick": ""}}
    assert decode_submission(SCHEMA, body) is body

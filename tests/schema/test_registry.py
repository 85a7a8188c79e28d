"""SchemaRegistry loading and IdentitySchema validation / extension readers."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from sidecar import errors
from sidecar.config.loader import ConfigError
from sidecar.config.model import IdentityConfig
from sidecar.i18n import builtin_catalogs
from sidecar.schema.model import IdentitySchema
from sidecar.schema.registry import SchemaRegistry, _default_document
from sidecar.schema.titles import TITLES

BASE = "http://127.0.0.1:4433/.auth"

PHONE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "$defs": {"phone": {"type": "string", "title": "Phone"}},
    "properties": {
        "traits": {
            "type": "object",
            "properties": {
                "username": {
                    "type": "string",
                    "ory.sh/kratos": {"credentials": {"password": {"identifier": True}}},
                },
                "phone": {
                    "$ref": "#/$defs/phone",
                    "ory.sh/kratos": {
                        "credentials": {"code": {"identifier": True, "via": "sms"}},
                        "verification": {"via": "sms"},
                    },
                },
                "emails": {
                    "type": "array",
                    "items": {
                        "type": "string",
                        "format": "email",
                        "ory.sh/kratos": {
                            "credentials": {"password": {"identifier": True}},
                            "recovery": {"via": "email"},
                        },
                    },
                },
            },
            "required": ["username"],
        }
    },
}


async def registry(*schemas: dict[str, Any], default: str = "default") -> SchemaRegistry:
    r = SchemaRegistry(
        IdentityConfig.model_validate({"default_schema_id": default, "schemas": schemas}), BASE
    )
    await r.load()
    return r


async def test_bundled_default_schema() -> None:
    r = await registry()
    schema = r.default()
    assert schema.id == "default" and [s.id for s in r.all()] == ["default"]
    traits = {"email": " Alice@Example.COM ", "name": {"first": "Alice", "last": "Liddell"}}
    schema.validate_traits(traits)
    assert schema.identifiers(traits, "password") == ["alice@example.com"]
    assert schema.identifiers(traits, "webauthn") == ["alice@example.com"]
    assert schema.verifiable_addresses(traits) == [("email", "alice@example.com")]
    assert schema.recovery_addresses(traits) == [("email", "alice@example.com")]
    assert schema.code_identifiers(traits) == [("alice@example.com", "email")]
    assert schema.totp_account_name(traits) == " Alice@Example.COM "
    fields = {f.path: f for f in schema.trait_fields()}
    assert list(fields) == ["email", "name.first", "name.last"]
    assert fields["email"].required and fields["email"].format == "email"
    assert set(fields["email"].identifier_for) == {"password", "webauthn", "code"}
    assert fields["name.first"].title == "First name" and not fields["name.first"].required


@pytest.mark.parametrize(
    ("traits", "path"),
    [
        pytest.param({}, "traits.email", id="missing-required"),
        pytest.param({"email": "not-an-email"}, "traits.email", id="format"),
        pytest.param({"email": "a@b.c", "name": {"first": 5}}, "traits.name.first", id="nested-type"),
        pytest.param({"email": "a@b.c", "extra": 1}, "traits", id="additional"),
        pytest.param(["a@b.c"], "traits", id="not-an-object"),
    ],
)
async def test_validation_errors_name_the_trait(traits: Any, path: str) -> None:
    schema = (await registry()).default()
    with pytest.raises(errors.ValidationError) as info:
        schema.validate_traits(traits)
    assert path in info.value.messages
    assert info.value.code == 400


async def test_sources_file_path_base64_inline(tmp_path: Path) -> None:
    path = tmp_path / "phone.schema.json"
    path.write_text(json.dumps(PHONE_SCHEMA))
    encoded = base64.b64encode(json.dumps(PHONE_SCHEMA).encode()).decode()
    r = await registry(
        {"id": "file", "url": f"file://{path}"},
        {"id": "path", "url": str(path)},
        {"id": "b64", "url": f"base64://{encoded}"},
        {"id": "inline", "schema": PHONE_SCHEMA},
        default="inline",
    )
    assert [s.id for s in r.all()] == ["file", "path", "b64", "inline"]
    assert r.default().id == "inline"
    for s in r.all():
        assert s.document == PHONE_SCHEMA


async def test_2020_12_refs_arrays_and_sms() -> None:
    schema = (await registry({"id": "p", "schema": PHONE_SCHEMA}, default="p")).get("p")
    traits = {"username": "Bob", "phone": "+49 (170) 123-4567", "emails": ["B@x.io", "c@y.io"]}
    schema.validate_traits(traits)
    assert schema.identifiers(traits, "password") == ["bob", "b@x.io", "c@y.io"]
    assert schema.code_identifiers(traits) == [("+491701234567", "sms")]
    assert schema.verifiable_addresses(traits) == [("sms", "+491701234567")]
    assert schema.recovery_addresses(traits) == [("email", "b@x.io"), ("email", "c@y.io")]
    assert schema.totp_account_name(traits) is None
    with pytest.raises(errors.ValidationError) as info:
        schema.validate_traits({"username": "x", "emails": ["nope"]})
    assert "traits.emails.0" in info.value.messages
    phone = next(f for f in schema.trait_fields() if f.path == "phone")
    assert phone.title == "Phone" and phone.identifier_for == ("code",)


@pytest.mark.parametrize(
    ("ref", "needle"),
    [
        pytest.param({"id": "bad", "schema": {"type": "nonsense"}}, "invalid JSON Schema", id="check-schema"),
        pytest.param({"id": "web", "url": "https://example.test/s.json"}, "remote", id="http"),
        pytest.param({"id": "gone", "url": "file:///nonexistent/s.json"}, "No such file", id="missing-file"),
        pytest.param({"id": "b64", "url": "base64://!!!"}, "base64", id="bad-base64"),
        pytest.param({"id": "list", "schema": None, "url": "base64://W10="}, "JSON object", id="not-object"),
    ],
)
async def test_invalid_schema_is_a_config_error_naming_the_id(ref: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError) as info:
        await registry(ref, default=ref["id"])
    assert f"id={ref['id']!r}" in str(info.value) and needle in str(info.value)


async def test_unknown_default_schema_id() -> None:
    with pytest.raises(ConfigError, match="default_schema_id"):
        await registry({"id": "a", "schema": PHONE_SCHEMA}, default="b")


async def test_lookup_and_urls() -> None:
    r = await registry()
    assert r.schema_url("default") == f"{BASE}/schemas/ZGVmYXVsdA"
    assert r.resolve_id("ZGVmYXVsdA") == "default"
    assert r.resolve_id("default") == "default"
    assert r.resolve_id("bm9wZQ") is None and r.resolve_id("%%%") is None
    with pytest.raises(errors.BadRequest):
        r.get("nope")


def test_the_default_schema_titles_are_in_the_catalogs() -> None:
    schema = IdentitySchema("default", _default_document())
    assert {f.title for f in schema.trait_fields()} == set(TITLES)
    de = builtin_catalogs().translator("de")
    assert [de.pgettext("1070002", t) for t in TITLES] == ["E-Mail", "Vorname", "Nachname"]

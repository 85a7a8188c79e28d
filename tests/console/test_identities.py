"""Console identity pages: search and pages, the schema-generated traits form validated as the
API validates, state, metadata, credentials, addresses, create and delete; each write audited."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sidecar.identity.manager import IdentitySpec
from tests.console.conftest import KEY, Console, MakeConsole
from tests.schemas import person_schema

SCHEMA = person_schema(
    email_title="E-Mail",
    name={
        "type": "object",
        "properties": {"first": {"type": "string", "title": "First name", "maxLength": 20}},
    },
    age={"type": "integer", "minimum": 0},
    newsletter={"type": "boolean"},
    plan={"type": "string", "enum": ["free", "pro"]},
    tags={"type": "array", "items": {"type": "string"}},
)


@pytest.fixture
async def console(make_console: MakeConsole, tmp_path: Path) -> Console:
    schema = tmp_path / "person.schema.json"
    schema.write_text(json.dumps(SCHEMA))
    c = await make_console(
        identity={"default_schema_id": "person", "schemas": [{"id": "person", "url": f"file://{schema}"}]},
        serve={"admin": {"api_key": KEY, "console": {"page_size": 2}}},
    )
    await c.sign_in()
    return c


async def make(
    console: Console, email: str, first: str = "Ada", password: str | None = "x-Very-long-pass-1"
) -> str:
    spec = IdentitySpec(
        traits={"email": email, "name": {"first": first}},
        credentials={"password": {"config": {"password": password}}} if password else None,
    )
    return str((await console.services.identities.create(spec)).id)


def ids_on(html: str) -> list[str]:
    return re.findall(r'<div class="id">([0-9a-f-]{36})</div>', html)


async def test_search_by_identifier_trait_and_id_with_pages(console: Console) -> None:
    a = await make(console, "ada@example.test", "Ada")
    b = await make(console, "bob@example.test", "Bob")
    c = await make(console, "carla@other.test", "Carla")
    c_ = console.client
    everyone = await c_.get("/console/identities")
    assert "3 identities" in everyone.text
    first = ids_on(everyone.text)
    assert len(first) == 2
    nxt = re.search(r'href="([^"]+)" rel="next"', everyone.text)
    assert nxt
    second = await c_.get(nxt.group(1).replace("&amp;", "&"))
    assert sorted(first + ids_on(second.text)) == sorted([a, b, c])
    assert 'rel="next"' not in second.text

    assert ids_on((await c_.get("/console/identities", params={"q": "example.test"})).text) == sorted([a, b])
    assert ids_on((await c_.get("/console/identities", params={"q": "CARL"})).text) == [c]
    by_trait = await c_.get("/console/identities", params={"q": "name.first=bo"})
    assert ids_on(by_trait.text) == [b] and "trait name.first contains" in by_trait.text
    by_id = await c_.get("/console/identities", params={"q": a})
    assert by_id.status_code == 303 and by_id.headers["location"] == f"/console/identities/{a}"
    nobody = await c_.get("/console/identities", params={"q": "nobody-at-all"})
    assert "No identity matches" in nobody.text
    bad_token = await c_.get("/console/identities", params={"page_token": "forged"})
    assert bad_token.status_code == 400 and "page token" in bad_token.text


async def test_the_traits_form_comes_from_the_schema(console: Console) -> None:
    a = await make(console, "ada@example.test")
    page = await console.client.get(f"/console/identities/{a}")
    html = page.text
    assert 'name="traits.email" type="email" value="ada@example.test"' in html
    assert 'name="traits.name.first" type="text" value="Ada" maxlength="20"' in html
    assert 'name="traits.age" type="number" value="" step="1"' in html
    assert 'type="checkbox" name="traits.newsletter"' in html
    assert '<select id="f-traits.plan" name="traits.plan">' in html and "<option>pro</option>" in html
    assert '<textarea id="f-traits.tags" name="traits.tags"' in html
    # Addresses and credentials are shown.
    assert "ada@example.test" in html and "<code>password</code>" in html


async def test_editing_traits_is_validated_as_the_api_validates(
    console: Console, audit: Callable[[], list[dict[str, Any]]]
) -> None:
    a = await make(console, "ada@example.test")
    form = {
        "traits.email": "not-an-email",
        "traits.name.first": "x" * 21,
        "traits.age": "twelve",
        "traits.plan": "pro",
    }
    bad = await console.post(f"/console/identities/{a}/traits", form)
    assert bad.status_code == 400
    assert 'data-field="traits.age">must be a whole number' in bad.text
    # The number was refused before the schema ran; fix it and the schema speaks.
    form["traits.age"] = "-1"
    bad = await console.post(f"/console/identities/{a}/traits", form)
    assert bad.status_code == 400
    for name in ("traits.email", "traits.name.first", "traits.age"):
        assert f'data-field="{name}"' in bad.text, name
    assert 'value="not-an-email"' in bad.text  # what was typed is kept
    stored = await console.services.identities.get(__import__("uuid").UUID(a))
    assert stored.traits["email"] == "ada@example.test"

    good = {
        "traits.email": "Ada.New@Example.test",
        "traits.name.first": "Adelheid",
        "traits.age": "37",
        "traits.newsletter": "true",
        "traits.plan": "pro",
        "traits.tags": "vip\n\nberlin\n",
    }
    ok = await console.post(f"/console/identities/{a}/traits", good)
    assert ok.status_code == 303 and ok.headers["location"].endswith("?done=traits#traits")
    stored = await console.services.identities.get(__import__("uuid").UUID(a))
    assert stored.traits == {
        "email": "Ada.New@Example.test",
        "name": {"first": "Adelheid"},
        "age": 37,
        "newsletter": True,
        "plan": "pro",
        "tags": ["vip", "berlin"],
    }
    # The identifier followed the trait, as after an API update.
    assert stored.credentials["password"].identifiers == ("ada.new@example.test",)
    assert (await console.client.get(ok.headers["location"])).text.count("Traits saved.") == 1
    # Clearing an optional field removes the trait.
    await console.post(f"/console/identities/{a}/traits", {**good, "traits.age": "", "traits.tags": ""})
    stored = await console.services.identities.get(__import__("uuid").UUID(a))
    assert "age" not in stored.traits and "tags" not in stored.traits
    results = [
        (x["action"], x["result"], x["identity_id"]) for x in audit() if x["action"] != "console.sign_in"
    ]
    assert results[:3] == [
        ("identity.update_traits", "refused", a),
        ("identity.update_traits", "refused", a),
        ("identity.update_traits", "ok", a),
    ]


async def test_a_taken_identifier_is_a_conflict_not_a_crash(console: Console) -> None:
    a = await make(console, "ada@example.test")
    await make(console, "bob@example.test")
    r = await console.post(f"/console/identities/{a}/traits", {"traits.email": "bob@example.test"})
    assert r.status_code == 409


async def test_state_metadata_and_credentials(
    console: Console, audit: Callable[[], list[dict[str, Any]]]
) -> None:
    import uuid

    a = await make(console, "ada@example.test")
    r = await console.post(f"/console/identities/{a}/state", {"state": "inactive"})
    assert r.status_code == 303
    assert (await console.services.identities.get(uuid.UUID(a))).state == "inactive"
    assert (await console.post(f"/console/identities/{a}/state", {"state": "gone"})).status_code == 400

    bad = await console.post(
        f"/console/identities/{a}/metadata", {"metadata_public": "{nope", "metadata_admin": ""}
    )
    assert bad.status_code == 400 and "not valid JSON" in bad.text and "{nope" in bad.text
    ok = await console.post(
        f"/console/identities/{a}/metadata",
        {"metadata_public": '{"plan": "gold"}', "metadata_admin": "[1, 2]"},
    )
    assert ok.status_code == 303
    stored = await console.services.identities.get(uuid.UUID(a))
    assert stored.metadata_public == {"plan": "gold"} and stored.metadata_admin == [1, 2]

    # The only first factor cannot go (the API's rule); a second factor can.
    only = await console.post(f"/console/identities/{a}/credentials/password/delete")
    assert only.status_code == 400 and "only first factor" in only.text
    unknown = await console.post(f"/console/identities/{a}/credentials/nonsense/delete")
    assert unknown.status_code == 400
    actions = [(x["action"], x["result"], x["detail"]) for x in audit() if x["action"] != "console.sign_in"]
    assert ("identity.set_state", "ok", "inactive") in actions
    assert ("identity.delete_credential", "refused", "password") in actions


async def test_create_and_delete_with_confirmation(
    console: Console, audit: Callable[[], list[dict[str, Any]]]
) -> None:
    import uuid

    page = await console.client.get("/console/identities/new")
    assert 'name="traits.email"' in page.text
    missing = await console.post("/console/identities/new", {"schema_id": "person", "traits.email": ""})
    assert missing.status_code == 400 and 'data-field="traits.email"' in missing.text
    made = await console.post(
        "/console/identities/new",
        {
            "schema_id": "person",
            "traits.email": "new@example.test",
            "traits.name.first": "Nia",
            "password": "x-Very-long-pass-1",
            "state": "active",
        },
    )
    assert made.status_code == 303
    new_id = made.headers["location"].split("/")[-1].split("?")[0]
    stored = await console.services.identities.get(uuid.UUID(new_id))
    assert stored.traits["name"] == {"first": "Nia"} and "password" in stored.credentials
    dup = await console.post(
        "/console/identities/new", {"schema_id": "person", "traits.email": "new@example.test"}
    )
    assert dup.status_code == 409

    confirm = await console.client.get(f"/console/identities/{new_id}/delete")
    assert "cannot be undone" in confirm.text
    refused = await console.post(f"/console/identities/{new_id}/delete")
    assert refused.status_code == 400
    gone = await console.post(f"/console/identities/{new_id}/delete", {"confirm": new_id})
    assert gone.status_code == 303
    assert (await console.client.get(f"/console/identities/{new_id}")).status_code == 404
    assert (await console.client.get("/console/identities/not-a-uuid")).status_code == 404
    actions = [(x["action"], x["result"], x["identity_id"]) for x in audit()]
    assert ("identity.create", "ok", new_id) in actions and ("identity.delete", "ok", new_id) in actions

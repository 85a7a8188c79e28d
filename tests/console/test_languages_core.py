"""The core's texts on console pages, in the reader's language: the identity schema's violations
(Kratos' message ids), the access rules' reasons and the managers' refusals. Each page is read for
English left (tests/i18n/leftovers.py reads these texts' sources too); the values stay as given."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sidecar.i18n import builtin_catalogs
from tests.console.conftest import KEY, Console, MakeConsole
from tests.console.test_identities import SCHEMA, make
from tests.console.test_operations import RULES
from tests.console.test_organizations import create
from tests.i18n.leftovers import chunks_of_html, english_left

LANGUAGES = ("de", "fr", "es", "pt_BR", "ja")
# A traits form the schema refuses four ways: an address, a length, a bound, an enum.
EDIT = {
    "traits.email": "not-an-email",
    "traits.name.first": "x" * 21,
    "traits.age": "-1",
    "traits.plan": "gold",
}


@pytest.fixture
async def console(make_console: MakeConsole, tmp_path: Path) -> Console:
    schema = tmp_path / "person.schema.json"
    schema.write_text(json.dumps(SCHEMA))
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    c = await make_console(
        identity={"default_schema_id": "person", "schemas": [{"id": "person", "url": f"file://{schema}"}]},
        serve={"admin": {"api_key": KEY}},
        rules=[str(rules)],
    )
    c.services.rules.load()
    await c.sign_in()
    return c


def _header(language: str) -> dict[str, str]:
    return {"Accept-Language": language.replace("_", "-")}


@pytest.mark.parametrize("language", LANGUAGES)
async def test_schema_violations_are_in_the_reader_language(console: Console, language: str) -> None:
    tr = builtin_catalogs().translator(language)
    a = await make(console, "ada@example.test")
    bad = await console.post(f"/console/identities/{a}/traits", EDIT, headers=_header(language))
    assert bad.status_code == 400
    for field in ("traits.email", "traits.name.first", "traits.age", "traits.plan"):
        assert f'data-field="{field}"' in bad.text, field
    assert english_left(chunks_of_html(bad.text), tr) == []
    # A new identity without its required email: 4000002, at the field.
    new = await console.post(
        "/console/identities/new",
        {"schema_id": "person", "traits.name.first": "Grace"},
        headers=_header(language),
    )
    assert new.status_code == 400 and 'data-field="traits.email"' in new.text
    assert english_left(chunks_of_html(new.text), tr) == []


async def test_the_violations_say_their_values_in_german_and_japanese(console: Console) -> None:
    a = await make(console, "ada@example.test")
    edit = {
        "traits.email": "not-an-email",
        "traits.name.first": "x" * 21,
        "traits.age": "-1",
        "traits.plan": "gold",
    }
    de = (await console.post(f"/console/identities/{a}/traits", edit, headers=_header("de"))).text
    assert "Die E-Mail-Adresse ist ungültig." in de
    assert "die Länge darf höchstens 20 betragen, ist aber 21" in de
    assert "muss mindestens 0 sein, ist aber -1" in de
    assert "muss einer dieser Werte sein: free, pro" in de
    ja = (await console.post(f"/console/identities/{a}/traits", EDIT, headers=_header("ja"))).text
    assert "長さは 20 以下にしてください\uff08現在 21\uff09" in ja
    new = await console.post("/console/identities/new", {"schema_id": "person"}, headers=_header("ja"))
    assert "email が入力されていません。" in new.text
    # English stays English, in Kratos' words.
    en = (await console.post(f"/console/identities/{a}/traits", EDIT)).text
    assert "length must be &lt;= 20, but got 21" in en and "must be &gt;= 0 but found -1" in en


@pytest.mark.parametrize("language", LANGUAGES)
async def test_the_rules_reasons_are_in_the_reader_language(console: Console, language: str) -> None:
    tr = builtin_catalogs().translator(language)
    who = await make(console, "ada@example.test")
    for query in (
        f"method=GET&url=https://app.test/billing/x&identity={who}",  # needs a role: forbidden
        "method=DELETE&url=https://app.test/livez",  # a method mismatch, then the catch-all
        "method=GET&url=https://app.test/livez",  # public
        "method=GET&url=https://app.test/billing/x",  # no session
    ):
        page = await console.client.get(f"/console/rules?{query}", headers=_header(language))
        assert page.status_code == 200 and 'id="decision"' in page.text, query
        assert english_left(chunks_of_html(page.text), tr) == [], query


async def test_the_rules_reasons_keep_their_values(console: Console) -> None:
    who = await make(console, "ada@example.test")
    url = f"/console/rules?method=GET&url=https://app.test/billing/x&identity={who}"
    de = (await console.client.get(url, headers=_header("de"))).text
    assert "verlangt eine der Rollen [&#39;finance&#39;]" in de
    assert "angemeldet, eine der Rollen [&#39;finance&#39;]" in de  # what billing requires
    ja = await console.client.get(
        "/console/rules?method=DELETE&url=https://app.test/livez", headers=_header("ja")
    )
    assert "メソッド DELETE は [&#39;GET&#39;, &#39;HEAD&#39;] に含まれません" in ja.text
    assert "<td>ログイン必須、ロール [&#39;finance&#39;] のいずれか</td>" in ja.text
    assert "有効なセッションがありません" in ja.text
    # The English the CLI prints is unchanged.
    en = (await console.client.get(url)).text
    assert (
        "needs one of the roles [&#39;finance&#39;]" in en
        and "path &#39;/billing/x&#39; not matched by" in en
    )


async def refusals(console: Console, language: str) -> dict[str, str]:
    """Pages showing a manager's or a store's refusal: name -> HTML."""
    header, tag = _header(language), uuid.uuid4().hex[:6]
    a = await make(console, f"ada-{tag}@example.test")
    await make(console, f"bob-{tag}@example.test")
    await create(console, f"Acme {tag}", f"{tag}.example", f"acme-{tag}")
    pages = {
        "not-found": await console.client.get(f"/console/identities/{uuid.uuid4()}", headers=header),
        "taken": await console.post(
            f"/console/identities/{a}/traits", {"traits.email": f"bob-{tag}@example.test"}, headers=header
        ),
        "last-factor": await console.post(
            f"/console/identities/{a}/credentials/password/delete", headers=header
        ),
        "one-label": await console.post(
            "/console/organizations/new", {"label": "Beta", "domains": "localhost"}, headers=header
        ),
        "taken-slug": await console.post(
            "/console/organizations/new", {"label": "Acme 2", "slug": f"acme-{tag}"}, headers=header
        ),
        "organization-gone": await console.client.get(
            f"/console/organizations/{uuid.uuid4()}", headers=header
        ),
    }
    for name, page in pages.items():
        assert page.status_code in (400, 404, 409), (name, page.status_code, page.text[:300])
    return {name: page.text for name, page in pages.items()}


@pytest.mark.parametrize("language", LANGUAGES)
async def test_the_managers_refusals_are_in_the_reader_language(console: Console, language: str) -> None:
    tr = builtin_catalogs().translator(language)
    for name, html in (await refusals(console, language)).items():
        assert english_left(chunks_of_html(html), tr) == [], name


async def test_a_refusal_keeps_its_values_and_the_audit_line_stays_english(
    console: Console, audit: Callable[[], list[dict[str, Any]]]
) -> None:
    de = await refusals(console, "de")
    assert "Die Ressource wurde nicht gefunden." in de["not-found"]
    assert "es gibt bereits eine Identität mit diesem Bezeichner" in de["taken"]
    assert "die Zugangsdaten password können nicht entfernt werden" in de["last-factor"]
    assert "domains: &#39;localhost&#39;: eine Domain braucht mindestens zwei Teile" in de["one-label"]
    ja = await refusals(console, "ja")
    assert "この識別子のアイデンティティはすでに存在します" in ja["taken"]
    assert "このスラッグの組織はすでに存在します" in ja["taken-slug"]
    refused = [a for a in audit() if a["action"] == "organization.create" and a["result"] == "refused"]
    assert refused and all(
        "a domain needs at least two labels" in a["detail"] or "slug" in a["detail"] for a in refused
    )

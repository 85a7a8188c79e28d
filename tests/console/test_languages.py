"""The console in the self-service pages' languages: chosen as they choose it (``Accept-Language``,
else a ``?lang=`` choice remembered in the language cookie, else ``selfservice.languages.default``),
every screen without English left in any shipped language, counts and dates written the language's
way, and audit lines still in English."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sidecar.i18n import builtin_catalogs
from sidecar.session.model import Device
from tests.console.conftest import KEY, Console, MakeConsole, csrf_of
from tests.console.test_operations import RULES, delivery, make, message
from tests.console.test_organizations import create, member
from tests.i18n.leftovers import chunks_of_html, english_left

LANGUAGES = ("de", "fr", "es", "pt_BR", "ja")


@pytest.fixture
async def console(make_console: MakeConsole, tmp_path: Path) -> Console:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    c = await make_console(
        rules=[str(rules)],
        selfservice={"flows": {"recovery": {"enabled": True, "use": "code"}}},
    )
    c.services.rules.load()
    await c.sign_in()
    return c


async def screens(console: Console) -> dict[str, str]:
    """Every console screen with something on it: the paths to read."""
    who = await make(console, "ada@example.test")
    await console.services.sessions.issue(
        who, "password", device=Device(ip_address="192.0.2.7", user_agent="Firefox")
    )
    ended = await console.services.sessions.issue(who, "password")
    await console.services.sessions.revoke(ended.session)
    courier = console.services.database.courier
    await courier.enqueue(
        message("wait@example.test", next_attempt_at=datetime.now(UTC) + timedelta(hours=1))
    )
    dead = await courier.enqueue(message("dead@example.test"))
    await courier.claim_batch("w", limit=1, lease=timedelta(minutes=1))
    await courier.mark_failed(dead.id, "w", error="550 mailbox unavailable", retry_at=None)
    outbox = console.services.database.outbox
    for d in (delivery("https://hooks.example.test/a"), delivery("https://hooks.example.test/b")):
        await outbox.enqueue(d)
    [first, second] = await outbox.claim_batch("w", limit=2, lease=timedelta(minutes=1))
    await outbox.mark_failed(first.id, "w", error="receiver answered 500", status_code=500, retry_at=None)
    await outbox.mark_delivered(second.id, "w", status_code=204)
    org = await create(console, "Acme", "acme.example")
    await member(console, "grace@acme.example", org)
    explain = "method=GET&url=https://app.test/billing/x&identity=" + str(who)
    return {
        "overview": "/console",
        "identities": "/console/identities",
        "search": "/console/identities?q=name.first%3DAda",
        "identity": f"/console/identities/{who}",
        "identity-saved": f"/console/identities/{who}?done=traits",
        "new": "/console/identities/new",
        "delete": f"/console/identities/{who}/delete",
        "courier": "/console/courier",
        "courier-empty": "/console/courier?status=processing",
        "webhooks": "/console/webhooks",
        "webhooks-dead": "/console/webhooks?status=dead",
        "webhooks-empty": "/console/webhooks?status=processing",
        "rules": "/console/rules",
        "explain": f"/console/rules?{explain}",
        "explain-anonymous": "/console/rules?method=GET&url=https://app.test/nowhere",
        "explain-relative": "/console/rules?url=/billing",
        "explain-ambiguous": "/console/rules?url=https://app.test/a%252fb",
        "organizations": "/console/organizations",
        "organizations-none": "/console/organizations?domain=nobody.example",
        "organization": f"/console/organizations/{org}",
        "members": f"/console/organizations/{org}/members",
        "organization-delete": f"/console/organizations/{org}/delete",
        "not-found": f"/console/identities/{uuid.uuid4()}",
        "bad-status": "/console/courier?status=nonsense",
    }


@pytest.mark.parametrize("language", LANGUAGES)
async def test_every_screen_is_in_the_browser_language(console: Console, language: str) -> None:
    tr = builtin_catalogs().translator(language)
    header = {"Accept-Language": f"{language.replace('_', '-')},en;q=0.5"}
    for name, path in (await screens(console)).items():
        page = await console.client.get(path, headers=header)
        assert page.status_code in (200, 400, 404), (name, page.status_code)
        assert page.headers["content-language"] == language.replace("_", "-"), name
        assert f'<html lang="{language.replace("_", "-")}">' in page.text, name
        assert "Accept-Language" in page.headers["vary"], name
        left = english_left(chunks_of_html(page.text), tr)
        assert left == [], (name, left)
    # A recovery code's page and the sign-in page (signed out) too.
    who = await make(console, "bob@example.test")
    made = await console.client.post(
        f"/console/identities/{who}/recovery",
        data={"csrf_token": await console.csrf(), "kind": "code"},
        headers=header,
    )
    assert made.status_code == 200 and english_left(chunks_of_html(made.text), tr) == []
    console.client.cookies.clear()
    signed_out = await console.client.get("/console/login", headers=header)
    assert signed_out.status_code == 200
    assert english_left(chunks_of_html(signed_out.text), tr) == []


async def test_the_words_are_the_translations(console: Console) -> None:
    de = {"Accept-Language": "de-DE"}
    overview = await console.client.get("/console", headers=de)
    assert "<title>Übersicht · sidecar-Konsole</title>" in overview.text
    assert ">Identitäten</a>" in overview.text and ">Abmelden</button>" in overview.text
    await make(console)
    ja = await console.client.get("/console/identities", headers={"Accept-Language": "ja"})
    assert "アイデンティティを検索" in ja.text and "<th>識別子</th>" in ja.text
    # The check of the other test sees English where it is left: the English page, read as German.
    english = await console.client.get("/console/identities")
    left = english_left(chunks_of_html(english.text), builtin_catalogs().translator("de"))
    assert {"Search identities", "New identity", "Identities", "sidecar console", "Sign out"} <= set(left)
    bad = await console.client.get("/console/courier?status=nonsense", headers=de)
    # A refusal with a value in it: translated, the value kept.
    assert bad.status_code == 400
    assert "Der Status muss einer von queued, processing, sent, abandoned sein." in bad.text
    relative = await console.client.get("/console/rules?url=/billing", headers=de)
    assert "keine absolute URL: /billing" in relative.text
    odd = await console.client.get("/console/rules?url=https://app.test/a%252fb", headers=de)
    assert "400: Der Pfad ist mehrdeutig oder fehlerhaft: " in odd.text


async def test_counts_and_dates_as_the_language_writes_them(console: Console) -> None:
    who = await make(console)
    for _ in range(3):
        await console.services.sessions.issue(who, "password")
    page = await console.client.get(f"/console/identities/{who}", headers={"Accept-Language": "de"})
    created = (await console.services.identities.get(who)).created_at
    months = ("Jan.", "Feb.", "März", "Apr.", "Mai", "Juni", "Juli", "Aug.", "Sept.", "Okt.", "Nov.", "Dez.")
    german = f"{created.day}. {months[created.month - 1]} {created.year}, {created:%H:%M} UTC"
    assert f"angelegt am {german}" in page.text
    ja = await console.client.get(f"/console/identities/{who}", headers={"Accept-Language": "ja"})
    assert f"{created.year}年{created.month}月{created.day}日 {created.hour}:{created:%M} UTC" in ja.text
    many = await console.client.get("/console/identities", headers={"Accept-Language": "de"})
    assert "1 Identität<" in many.text
    await make(console, "bob@example.test")
    two = await console.client.get("/console/identities", headers={"Accept-Language": "de"})
    assert "2 Identitäten<" in two.text


async def test_the_choice_is_remembered_and_the_browser_language_comes_first(console: Console) -> None:
    chosen = await console.client.get("/console/organizations?lang=fr")
    assert chosen.headers["content-language"] == "fr" and "Nouvelle organisation" in chosen.text
    cookie = next(c for c in console.client.cookies.jar if c.name == "sidecar_lang")
    assert (cookie.value, cookie.path) == ("fr", "/console")
    # Remembered: no header, no parameter, still French.
    later = await console.client.get("/console/organizations")
    assert later.headers["content-language"] == "fr"
    # The self-service pages' order: an available browser language beats the remembered choice.
    browser = await console.client.get("/console/organizations", headers={"Accept-Language": "es"})
    assert browser.headers["content-language"] == "es"
    # An unknown choice is no choice, and sets nothing.
    console.client.cookies.clear()
    await console.sign_in()
    unknown = await console.client.get("/console/organizations?lang=../../etc")
    assert unknown.headers["content-language"] == "en" and "sidecar_lang" not in unknown.headers.get(
        "set-cookie", ""
    )


async def test_the_configured_default_and_the_sign_in_page(make_console: MakeConsole) -> None:
    console = await make_console(selfservice={"languages": {"default": "pt_BR"}})
    login = await console.client.get("/console/login")
    assert login.headers["content-language"] == "pt-BR" and "Entrar no console" in login.text
    english = await console.client.get("/console/login", headers={"Accept-Language": "en-GB"})
    assert english.headers["content-language"] == "en" and "Sign in to the console" in english.text


async def test_a_refused_sign_in_is_translated_but_audited_in_english(
    make_console: MakeConsole, audit: Callable[[], list[dict[str, Any]]]
) -> None:
    console = await make_console()
    ja = {"Accept-Language": "ja"}
    form = await console.client.get("/console/login", headers=ja)
    wrong = await console.client.post(
        "/console/login",
        data={"csrf_token": csrf_of(form.text), "api_key": "not-" + KEY, "name": "Ada", "next": "/console"},
        headers=ja,
    )
    assert wrong.status_code == 401 and "管理 API キーが正しくありません。" in wrong.text
    [line] = [a for a in audit() if a["action"] == "console.sign_in"]
    assert (line["result"], line["detail"]) == ("refused", "That is not the admin API key.")

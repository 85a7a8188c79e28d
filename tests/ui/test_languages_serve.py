"""The built-in pages and the API in the user's language, through ``sidecar serve`` (issue 18)."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.ops.serve import Proc, base_config, migrate, ports, running, serve_argv, write_config
from tests.schemas import person_schema

PASSWORD = "a-long-language-passphrase"
SCHEMA = person_schema(
    email_title="E-Mail", closed=True, locale={"type": "string", "title": "Language", "minLength": 2}
)
# An extra catalog: a language sidecar does not ship, with a single entry.
ITALIAN = (
    'msgid ""\nmsgstr ""\n"Content-Type: text/plain; charset=utf-8\\n"\n\n'
    'msgid "Sign in"\nmsgstr "Accedi"\n\n'
    'msgctxt "1070001"\nmsgid "Password"\nmsgstr "Parola d\'ordine"\n'
)


def _server(tmp: Path, **languages: Any) -> Iterator[Proc]:
    (tmp / "person.schema.json").write_text(json.dumps(SCHEMA))
    (tmp / "catalogs" / "it" / "LC_MESSAGES").mkdir(parents=True)
    (tmp / "catalogs" / "it" / "LC_MESSAGES" / "sidecar.po").write_text(ITALIAN, encoding="utf-8")
    public_port, admin_port = ports()
    cfg = base_config(
        tmp,
        public_port,
        admin_port,
        identity={
            "default_schema_id": "person",
            "schemas": [{"id": "person", "url": f"file://{tmp}/person.schema.json"}],
        },
    )
    cfg["selfservice"]["languages"] = {"catalog_dir": str(tmp / "catalogs"), **languages}
    path = write_config(tmp / "cfg.yaml", cfg)
    migrate(path, tmp)
    with running(serve_argv(path, "--dev"), cwd=tmp, public_port=public_port, admin_port=admin_port) as proc:
        yield proc


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    yield from _server(tmp_path_factory.mktemp("languages"))


@pytest.fixture(scope="module")
def translating_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    yield from _server(tmp_path_factory.mktemp("languages-api"), translate_api=True, default="fr")


def _page(c: httpx.Client, path: str, **headers: str) -> httpx.Response:
    r = c.get(path, headers=headers, follow_redirects=True)
    assert r.status_code == 200, r.text
    return r


def _form(page: str) -> tuple[str, str]:
    action = html.unescape(re.search(r'<form class="flow flow-\w+" action="([^"]+)"', page).group(1))  # type: ignore[union-attr]
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    return action, html.unescape(csrf)


def _register(c: httpx.Client, email: str, locale: str) -> None:
    page = _page(c, "/.auth/ui/registration").text
    action, csrf = _form(page)
    r = c.post(
        action,
        data={
            "csrf_token": csrf,
            "method": "password",
            "traits.email": email,
            "traits.locale": locale,
            "password": PASSWORD,
        },
    )
    assert r.status_code == 303, r.text


def test_the_login_page_in_german_by_accept_language(server: Proc) -> None:
    with httpx.Client(base_url=server.public_url, timeout=15) as c:
        r = _page(c, "/.auth/ui/login", **{"Accept-Language": "de-DE,de;q=0.9,en;q=0.5"})
        assert r.headers["content-language"] == "de"
        assert '<html lang="de">' in r.text
        assert "<title>Anmelden</title>" in r.text
        assert ">Passwort</label>" in r.text
        assert ">Mit Passwort anmelden</button>" in r.text
        assert ">Konto erstellen</a>" in r.text

        # A wrong password: Kratos' message 4000006, in German on the page ...
        action, csrf = _form(r.text)
        r = c.post(
            action,
            data={
                "csrf_token": csrf,
                "method": "password",
                "identifier": "no@example.test",
                "password": "x" * 12,
            },
        )
        assert r.status_code == 303
        page = _page(c, r.headers["location"], **{"Accept-Language": "de"})
        assert 'data-message-id="4000006">Die Zugangsdaten sind ungültig.' in page.text
        # ... and in Kratos' English in the JSON API (translate_api is off by default).
        flow_id = parse_qs(urlsplit(str(page.url)).query)["flow"][0]
        api = c.get(f"/.auth/self-service/login/flows?id={flow_id}", headers={"Accept-Language": "de"}).json()
        assert api["ui"]["messages"][0]["id"] == 4000006
        assert api["ui"]["messages"][0]["text"].startswith("The provided credentials are invalid")


def test_schema_violations_in_japanese_on_the_page_and_kratos_ids_in_the_api(server: Proc) -> None:
    with httpx.Client(base_url=server.public_url, timeout=15) as c:
        page = _page(c, "/.auth/ui/registration", **{"Accept-Language": "ja"})
        action, csrf = _form(page.text)
        data = {"csrf_token": csrf, "method": "password", "traits.email": "ada", "traits.locale": "x"}
        r = c.post(action, data={**data, "password": PASSWORD})
        assert r.status_code == 303
        page = _page(c, r.headers["location"], **{"Accept-Language": "ja"})
        assert 'data-message-id="4000040">メールアドレスが正しくありません。' in page.text
        assert 'data-message-id="4000003">長さは 2 以上にしてください\uff08現在 1\uff09' in page.text
        # The JSON API: Kratos' ids, English texts and values, whatever the reader's language.
        flow_id = parse_qs(urlsplit(str(page.url)).query)["flow"][0]
        api = c.get(f"/.auth/self-service/registration/flows?id={flow_id}", headers={"Accept-Language": "ja"})
        said = {m["id"]: m for n in api.json()["ui"]["nodes"] for m in n["messages"]}
        assert said[4000003]["text"] == "length must be >= 2, but got 1"
        assert said[4000003]["context"] == {"min_length": 2, "actual_length": 1}
        assert said[4000040]["text"] == "The email address is invalid."


def test_english_and_languages_nobody_has_stay_english(server: Proc) -> None:
    with httpx.Client(base_url=server.public_url, timeout=15) as c:
        for header in ({}, {"Accept-Language": "nl-NL, sv;q=0.8"}):
            r = _page(c, "/.auth/ui/login", **header)
            assert r.headers["content-language"] == "en"
            assert "<title>Sign in</title>" in r.text and ">Password</label>" in r.text


def test_a_message_without_a_translation_falls_back_to_english(server: Proc) -> None:
    # Italian comes from catalog_dir with two entries: those are Italian, every other text English.
    with httpx.Client(base_url=server.public_url, timeout=15) as c:
        r = _page(c, "/.auth/ui/login", **{"Accept-Language": "it"})
        assert r.headers["content-language"] == "it"
        assert "<title>Accedi</title>" in r.text
        assert ">Parola d&#39;ordine</label>" in r.text
        assert ">Sign in with password</button>" in r.text
        assert ">Create an account</a>" in r.text


def test_a_lang_choice_is_remembered_in_a_cookie(server: Proc) -> None:
    with httpx.Client(base_url=server.public_url, timeout=15) as c:
        r = _page(c, "/.auth/ui/login?lang=ja")
        assert r.headers["content-language"] == "ja"
        assert "<title>サインイン</title>" in r.text
        assert c.cookies.get("sidecar_lang") == "ja"
        # Later pages without ?lang=: the cookie decides (no Accept-Language sent) ...
        r = _page(c, "/.auth/ui/registration")
        assert "<title>アカウントを作成</title>" in r.text
        # ... but the browser's own languages come first.
        r = _page(c, "/.auth/ui/registration", **{"Accept-Language": "es"})
        assert "<title>Crear una cuenta</title>" in r.text
        # A choice of a language there is no catalog for is not remembered.
        r = _page(c, "/.auth/ui/login?lang=xx")
        assert c.cookies.get("sidecar_lang") == "ja"


def test_the_identity_locale_trait_wins_on_pages_that_know_the_identity(server: Proc) -> None:
    with httpx.Client(base_url=server.public_url, timeout=15) as c:
        _register(c, "amelie@example.test", "fr-FR")
        r = _page(c, "/.auth/ui/settings", **{"Accept-Language": "de"})
        assert r.headers["content-language"] == "fr"
        assert "<title>Paramètres du compte</title>" in r.text
        assert "Connecté en tant que amelie@example.test" in r.text
        assert ">Changer le mot de passe</h2>" in r.text
        r = _page(c, "/.auth/ui/welcome", **{"Accept-Language": "de"})
        assert "<title>Vous êtes connecté</title>" in r.text
        assert 'Connecté en tant que <strong id="identifier">amelie@example.test</strong>' in r.text


def test_translate_api_puts_the_negotiated_language_in_the_json(translating_server: Proc) -> None:
    with httpx.Client(base_url=translating_server.public_url, timeout=15) as c:
        flow = c.get("/.auth/self-service/login/api", headers={"Accept-Language": "pt-BR"}).json()
        labels = {n["attributes"].get("name"): n["meta"].get("label") for n in flow["ui"]["nodes"]}
        assert labels["password"] == {"id": 1070001, "text": "Senha", "type": "info"}
        r = c.post(
            flow["ui"]["action"],
            json={"method": "password", "identifier": "nobody@example.test", "password": "y" * 12},
            headers={"Accept-Language": "pt-BR"},
        )
        assert r.status_code == 400
        assert r.headers["content-language"] == "pt_BR"
        message = r.json()["ui"]["messages"][0]
        assert message["id"] == 4000006
        assert message["text"].startswith("As credenciais são inválidas.")
        # No Accept-Language: the configured default (fr).
        flow = c.get("/.auth/self-service/login/api").json()
        labels = {n["attributes"].get("name"): n["meta"].get("label") for n in flow["ui"]["nodes"]}
        assert labels["password"]["text"] == "Mot de passe"


def test_an_unknown_default_language_is_refused_at_start(tmp_path: Path) -> None:
    public_port, admin_port = ports()
    cfg = base_config(tmp_path, public_port, admin_port)
    cfg["selfservice"]["languages"] = {"default": "xx"}
    path = write_config(tmp_path / "cfg.yaml", cfg)
    migrate(path, tmp_path)
    out = subprocess.run(
        [sys.executable, "-m", "sidecar", "serve", "-c", str(path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "selfservice.languages.default: no catalog 'xx'" in out.stdout + out.stderr

"""Japanese pages in Chromium (the Debian browser) through ``sidecar serve``, with real CJK fonts."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import Browser
from tests.ops.serve import Proc, base_config, migrate, ports, running, serve_argv, write_config

pytestmark = pytest.mark.e2e
# Japanese ends a question with a full-width question mark.
FORGOT = "パスワードをお忘れですか\uff1f"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    tmp = tmp_path_factory.mktemp("browser-languages")
    public_port, admin_port = ports()
    cfg = base_config(tmp, public_port, admin_port)
    cfg["selfservice"]["flows"] = {"recovery": {"enabled": True, "use": "code"}}
    cfg["courier"] = {"smtp": {"connection_uri": "smtp://127.0.0.1:1/"}}
    path = write_config(tmp / "cfg.yaml", cfg)
    migrate(path, tmp)
    with running(serve_argv(path, "--dev"), cwd=tmp, public_port=public_port, admin_port=admin_port) as proc:
        yield proc


def test_a_japanese_font_is_installed() -> None:
    # Without one, Chromium draws empty boxes and the screenshot below shows nothing readable.
    fonts = subprocess.run(["fc-list", ":lang=ja", "family"], capture_output=True, text=True, check=True)
    assert "Noto Sans CJK JP" in fonts.stdout, "apt-get install fonts-noto-cjk"


@pytest.mark.parametrize("browser", [{"locale": "ja-JP"}], indirect=True)
def test_the_login_page_in_japanese(server: Proc, browser: Browser) -> None:
    page = browser.page
    page.goto(f"{server.public_url}/.auth/ui/login")
    expect(page).to_have_title("サインイン")
    assert page.locator("html").get_attribute("lang") == "ja"
    expect(page.locator("label[for]").filter(has_text="パスワード")).to_be_visible()
    page.locator("input[name=identifier]").fill("nobody@example.test")
    page.get_by_label("パスワード").fill("a-wrong-passphrase")
    page.get_by_role("button", name="パスワードでサインイン").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("認証情報が正しくありません。")
    assert alert.get_attribute("data-message-id") == "4000006"
    expect(page.get_by_role("link", name=FORGOT)).to_be_visible()
    # The glyphs come from the CJK font, not a fallback box: the title is as wide as real text.
    width = page.locator("#page-title").evaluate("e => e.getBoundingClientRect().width")
    assert width > 60
    browser.screenshot("languages-login-ja")
    assert browser.problems == []


@pytest.mark.parametrize("browser", [{"locale": "ja-JP"}], indirect=True)
def test_the_recovery_page_in_japanese_on_a_phone(server: Proc, browser: Browser) -> None:
    page = browser.page
    page.set_viewport_size({"width": 375, "height": 740})
    page.goto(f"{server.public_url}/.auth/ui/login")
    page.get_by_role("link", name=FORGOT).click()
    expect(page).to_have_title("アカウントを復旧")
    expect(page.get_by_role("button", name="送信")).to_be_visible()
    expect(page.get_by_role("link", name="サインインに戻る")).to_be_visible()
    browser.screenshot("languages-recovery-ja-phone")
    assert browser.problems == []

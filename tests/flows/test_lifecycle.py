"""Shared flow mechanics: return_to checking, CSRF tokens, NUL detection, flow JSON."""

from __future__ import annotations

import pytest

from sidecar import errors
from sidecar.flows.lifecycle import contains_nul
from sidecar.security import csrf
from sidecar.security.return_to import resolve_return_to

BASE = "http://127.0.0.1:4433/.auth"
ALLOWED = [
    "https://app.example.test/dashboard",
    "https://*.tenant.example.test/",
    "http://localhost:3000",
    # Native apps (Kratos x/redir/secure_redirect.go compares scheme, host and path of any scheme).
    "myapp://signed-in",
    "com.example.app:/oauth",
]
DEFAULT = "https://app.example.test/"


def _check(url: str | None) -> str | None:
    return resolve_return_to(url, allowed=ALLOWED, public_base_url=BASE, default_url=DEFAULT)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param(None, None, id="none"),
        pytest.param("", None, id="empty"),
        pytest.param("https://app.example.test/dashboard", "https://app.example.test/dashboard", id="exact"),
        pytest.param(
            "https://APP.example.test/dashboard/x?y=1", "https://app.example.test/dashboard/x?y=1", id="case"
        ),
        pytest.param(
            "https://app.example.test:443/dashboard", "https://app.example.test/dashboard", id="port"
        ),
        pytest.param("/dashboard/a", "https://app.example.test/dashboard/a", id="relative"),
        pytest.param("https://a.tenant.example.test/x", "https://a.tenant.example.test/x", id="wildcard"),
        pytest.param("http://localhost:3000/anything", "http://localhost:3000/anything", id="any-path"),
        pytest.param(f"{BASE}/ui/welcome", f"{BASE}/ui/welcome", id="own-base"),
        pytest.param(
            "https://app.example.test/dashboard#frag", "https://app.example.test/dashboard", id="fragment"
        ),
        pytest.param("myapp://signed-in?x=1", "myapp://signed-in?x=1", id="app-scheme"),
        pytest.param("com.example.app:/oauth/done", "com.example.app:/oauth/done", id="app-scheme-no-host"),
    ],
)
def test_allowed(url: str | None, expected: str | None) -> None:
    assert _check(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example",
        "//evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "https://app.example.test@evil.example/dashboard",
        "https://app.example.test/dashboardx",
        "https://app.example.test/dashboard/../admin",
        "https://app.example.test/",
        "http://app.example.test/dashboard",
        "https://tenant.example.test/",
        "https://a.tenant.example.test.evil.example/",
        "ftp://app.example.test/dashboard",
        "javascript://app.example.test/dashboard",
        "otherapp://signed-in",
        "myapp://elsewhere",
        "myapp://evil@signed-in",
        "com.example.app:/oauthx",
        "com.example.app:/oauth/../admin",
        "javascript:alert(1)",
        "data:text/html,hi",
        "https://app.example.test/dash\nboard",
        "https://app.example.test/dashboard\x00",
        "https://app.example.test:99999/dashboard",
        "http://127.0.0.1:4433/.authx",
        "not a url",
    ],
)
def test_forbidden(url: str) -> None:
    with pytest.raises(errors.ReturnToForbidden):
        _check(url)


@pytest.mark.parametrize(
    ("url", "allowed", "expected"),
    [
        pytest.param("myapp:////evil.example", "myapp:/", "myapp:/evil.example", id="four-slashes"),
        pytest.param("myapp:////evil.example/x/..", "myapp:/", "myapp:/evil.example", id="dot-segment"),
        pytest.param(
            "myapp://signed-in//evil.example", "myapp://signed-in", "myapp://signed-in/evil.example"
        ),
    ],
)
def test_an_app_url_is_written_back_with_the_host_it_was_checked_with(
    url: str, allowed: str, expected: str
) -> None:
    """The URL handed back must be the one checked: a path starting with "//" written after an
    empty host would turn into a host of its own (``myapp:////evil`` -> ``myapp://evil``)."""
    checked = resolve_return_to(url, allowed=[allowed], public_base_url=BASE, default_url=DEFAULT)
    assert checked == expected
    assert resolve_return_to(checked, allowed=[allowed], public_base_url=BASE, default_url=DEFAULT) == checked


def test_csrf_mask_round_trip() -> None:
    token = csrf.new_token()
    masks = {csrf.mask(token) for _ in range(10)}
    assert len(masks) == 10 and token not in masks
    assert all(csrf.verify(token, m) for m in masks)
    assert not csrf.verify(csrf.new_token(), masks.pop())
    assert not csrf.verify(token, token)  # the raw cookie value is not a valid form token
    for bad in (None, "", "!!!", "a" * 86, "é"):
        assert not csrf.verify(token, bad)
        assert not csrf.verify(bad, csrf.mask(token))
    assert (
        csrf.cookie_name(BASE)
        == "csrf_token_1e50314f6bc911ff7d6134b683bd21d3af6808f359cf5509ebdcef48a57e93b6"
    )


@pytest.mark.parametrize(
    ("value", "found"),
    [
        ("ok", False),
        ("a\x00", True),
        ({"k": ["x", {"y": "\x00"}]}, True),
        ({"\x00": 1}, True),
        ([1, 2.5, None], False),
    ],
)
def test_contains_nul(value: object, found: bool) -> None:
    assert contains_nul(value) is found

"""Path normalisation (DESIGN §5.1): one canonical form, ambiguity refused."""

from __future__ import annotations

import pytest

from sidecar.proxy.paths import BadPath, normalise_path

CASES = [
    pytest.param(b"/", "/", id="root"),
    pytest.param(b"/a/b", "/a/b", id="plain"),
    pytest.param(b"/a/b/", "/a/b/", id="trailing slash kept"),
    pytest.param(b"/public/../private", "/private", id="dot-dot"),
    pytest.param(b"/public/%2e%2e/private", "/private", id="encoded dot-dot"),
    pytest.param(b"/public/%2E%2e/private", "/private", id="mixed-case encoded dot-dot"),
    pytest.param(b"/public/.%2e/private", "/private", id="half encoded dot-dot"),
    pytest.param(b"/a/./b", "/a/b", id="dot"),
    pytest.param(b"//private", "/private", id="double slash"),
    pytest.param(b"/a///b", "/a/b", id="many slashes"),
    pytest.param(b"/../../x", "/x", id="above root clamps"),
    pytest.param(b"/a/..", "/", id="dot-dot at end"),
    pytest.param(b"/%7euser", "/~user", id="unreserved decoded"),
    pytest.param(b"/caf%c3%a9", "/caf%C3%A9", id="reserved stays encoded, hex upper"),
    pytest.param(b"/a%20b", "/a%20b", id="space stays encoded"),
    pytest.param(b"/a:b@c!$&'()*+,=", "/a:b@c!$&'()*+,=", id="sub-delims"),
]

BAD = [
    pytest.param(b"/a%2fb", id="encoded slash"),
    pytest.param(b"/a%2Fb", id="encoded slash upper"),
    pytest.param(b"/a%5cb", id="encoded backslash"),
    pytest.param(b"/a\\b", id="raw backslash"),
    pytest.param(b"/a%00", id="encoded NUL"),
    pytest.param(b"/a\x00", id="raw NUL"),
    pytest.param(b"/a%0d%0a", id="encoded CRLF"),
    pytest.param(b"/a%252e", id="double encoding"),
    pytest.param(b"/a%25%341", id="double encoding with escaped hex digits"),
    pytest.param(b"/a%25%32e", id="double encoding, one hex digit escaped"),
    pytest.param(b"/a;jsessionid=1", id="path parameter"),
    pytest.param(b"/a%3bx", id="encoded semicolon"),
    pytest.param(b"/a%", id="truncated escape"),
    pytest.param(b"/a%g1", id="bad hex"),
    pytest.param(b"/caf\xc3\xa9", id="raw non-ASCII"),
    pytest.param(b"a/b", id="relative"),
    pytest.param(b"/a b", id="raw space"),
    pytest.param(b"/a#frag", id="fragment"),
]


@pytest.mark.parametrize(("raw", "expected"), CASES)
def test_normalise(raw: bytes, expected: str) -> None:
    assert normalise_path(raw) == expected


@pytest.mark.parametrize("raw", BAD)
def test_ambiguous_paths_are_refused(raw: bytes) -> None:
    with pytest.raises(BadPath):
        normalise_path(raw)


def test_path_parameters_can_be_allowed() -> None:
    assert normalise_path(b"/a;v=1/b", reject_parameters=False) == "/a;v=1/b"

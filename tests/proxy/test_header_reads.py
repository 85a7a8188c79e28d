"""The decision endpoints' reads of a request, made cheaper for the synchronous answers (issue 15):
the same results as the reads they replaced, for header names in any case (ASGI servers give
lower-case names; tests and callers of the pure functions may not), duplicates and hostile paths.

Each is checked against the replaced implementation, kept here as the reference."""

from __future__ import annotations

from typing import Any, cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.proxy import access as access_module
from sidecar.proxy.access import Access, RequestFacts
from sidecar.proxy.decisions import ENVOY, FORWARD_AUTH, NGINX, OATHKEEPER, DecisionEndpoints, dialect_for
from sidecar.proxy.headers import header_value_ok, parse_cookie
from sidecar.proxy.paths import (
    _ESCAPE_AFTER_ONE_DECODE,
    _FORBIDDEN_ESCAPES,
    _HEX,
    _PCHAR,
    _PCHAR_BYTES,
    _UNRESERVED,
    BadPath,
    _remove_dot_segments,
    normalise_path,
)
from sidecar.proxy.prefix import OwnPaths
from sidecar.security.tokens import digest
from sidecar.security.trusted_proxies import TrustedProxies
from tests.proxy.test_path_properties import PIECES, RAW_PATHS

COOKIE = b"ory_kratos_session"


def facts_before(headers: list[tuple[bytes, bytes]], cookie_name: bytes) -> RequestFacts:
    """``RequestFacts.read`` before issue 15's change: every name lower-cased and compared."""
    session_token = bearer = cookie = None
    requested_with = fetch_mode = fetch_dest = None
    html = False
    for name, value in headers:
        n = name.lower()
        if n == b"cookie":
            if cookie is None:
                cookie = parse_cookie(value, cookie_name)
        elif n == b"x-session-token":
            session_token = value
        elif n == b"authorization":
            if value[:7].lower() == b"bearer ":
                bearer = value[7:].strip()
        elif n == b"accept":
            html = value.find(b"text/html") != -1
        elif n == b"sec-fetch-mode":
            fetch_mode = value
        elif n == b"sec-fetch-dest":
            fetch_dest = value
        elif n == b"x-requested-with":
            requested_with = value
    if session_token or bearer or (requested_with and requested_with.lower() == b"xmlhttprequest"):
        api = True
    elif fetch_mode == b"navigate" or fetch_dest == b"document":
        api = False
    elif fetch_mode is not None:
        api = True
    else:
        api = not html
    raw = session_token or bearer or cookie
    token = raw.decode("latin-1") if raw else None
    return RequestFacts(token=token, token_from_bearer=session_token is None and bearer is not None, api=api)


FACT_NAMES = [
    b"cookie", b"Cookie", b"COOKIE", b"x-session-token", b"X-Session-Token", b"authorization",
    b"Authorization", b"accept", b"Accept", b"sec-fetch-mode", b"Sec-Fetch-Mode", b"sec-fetch-dest",
    b"SEC-FETCH-DEST", b"x-requested-with", b"X-Requested-With", b"host", b"user-agent", b"x-cookie",
    b"cookies", b"",
]  # fmt: skip
FACT_VALUES = [
    b"ory_kratos_session=abc", b"theme=dark", b"theme=dark; ory_kratos_session=c2", b"tok",
    b"Bearer t1", b"bearer  t2 ", b"Basic x", b"text/html", b"application/json", b"navigate",
    b"cors", b"document", b"XMLHttpRequest", b"", b"fetch",
]  # fmt: skip
HEADER_LISTS = st.lists(st.tuples(st.sampled_from(FACT_NAMES), st.sampled_from(FACT_VALUES)), max_size=8)


@settings(max_examples=400, deadline=None)
@given(HEADER_LISTS)
def test_request_facts_read_as_before_for_names_in_any_case(headers: list[tuple[bytes, bytes]]) -> None:
    # Twice: the second read finds every name classified by the first.
    assert RequestFacts.read(headers, COOKIE) == facts_before(headers, COOKIE)
    assert RequestFacts.read(headers, COOKIE) == facts_before(headers, COOKIE)


def test_request_facts_classify_each_name_once_and_stay_bounded() -> None:
    kinds = access_module._KINDS
    kinds.clear()
    headers = [(b"X-Session-Token", b"t"), (b"x-session-token", b"u"), (b"User-Agent", b"wrk")]
    assert RequestFacts.read(headers, COOKIE).token == "u"
    assert kinds == {b"X-Session-Token": 2, b"x-session-token": 2, b"User-Agent": 0}
    # Client-chosen names cannot grow it without bound (a version without the bound fails).
    for i in range(3000):
        RequestFacts.read([(b"x-name-%d" % i, b"v")], COOKIE)
    assert len(kinds) <= 1025
    assert RequestFacts.read(headers, COOKIE).token == "u"


def endpoints(trusted: list[str]) -> DecisionEndpoints:
    return DecisionEndpoints(
        cast(Any, None),
        cast(Any, None),
        cast(Any, None),
        TrustedProxies.parse(trusted),
        public_base_url="https://auth.test/.auth",
        reject_path_parameters=True,
    )


def original_before(ends: DecisionEndpoints, dialect: Any, sub: bytes, scope: dict[str, Any]) -> Any:
    """``DecisionEndpoints._original`` before issue 15's change."""
    peer = scope["client"][0] if scope.get("client") else None
    trusted = ends.trusted.trusts(peer)
    h: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        n = name.lower()
        if n.startswith((b"x-original-", b"x-forwarded-", b"host")):
            h.setdefault(n, value)
    host = h.get(b"host", b"").decode("latin-1")
    scheme = ends.base_scheme
    if trusted:
        host = h.get(b"x-forwarded-host", b"").decode("latin-1").split(",")[0].strip() or host
        proto = h.get(b"x-forwarded-proto", b"").decode("latin-1").split(",")[0].strip()
        scheme = proto if proto in ("http", "https") else scheme
    return dialect.original(sub, scope["method"], scope.get("query_string", b""), h, trusted, host, scheme)


ORIGINAL_NAMES = [
    b"host", b"Host", b"HOST", b"hostname", b"x-original-uri", b"X-Original-URI", b"x-original-url",
    b"X-Original-Url", b"x-original-method", b"X-ORIGINAL-METHOD", b"x-forwarded-host",
    b"X-Forwarded-Host", b"x-forwarded-proto", b"X-Forwarded-Proto", b"x-forwarded-uri",
    b"X-Forwarded-Uri", b"x-forwarded-method", b"X-Forwarded-Method", b"x-forwarded-prefix",
    b"user-agent", b"x-session-token", b"x-original", b"x-forwarded",
]  # fmt: skip
ORIGINAL_VALUES = [
    b"/private/x", b"/public/y?q=1", b"https://app.test/private/z?a", b"app.test", b"evil.test, app.test",
    b"https", b"ftp", b"post", b"DELETE", b"", b"/",
]  # fmt: skip
DIALECTS = [
    (NGINX, b"/authz/nginx"),
    (FORWARD_AUTH, b"/authz/forward-auth"),
    (ENVOY, b"/authz/envoy/private/e"),
    (OATHKEEPER, b"/decisions/private/o"),
]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(ORIGINAL_NAMES), st.sampled_from(ORIGINAL_VALUES)), max_size=8),
    st.sampled_from(DIALECTS),
    st.sampled_from(["10.0.0.1", "192.0.2.9", None]),
)
def test_the_original_request_is_read_as_before_for_names_in_any_case(
    headers: list[tuple[bytes, bytes]], dialect: tuple[Any, bytes], peer: str | None
) -> None:
    # Only the trusted peer's forwarded headers count (10.0.0.0/8), before and after.
    ends = endpoints(["10.0.0.0/8"])
    scope = {
        "method": "GET",
        "query_string": b"k=v",
        "headers": headers,
        "client": (peer, 4000) if peer else None,
    }
    for _ in range(2):  # the second time with every name classified
        assert ends._original(dialect[0], dialect[1], scope) == original_before(ends, *dialect, scope)


def test_an_untrusted_peer_s_forwarded_headers_are_ignored_in_any_case() -> None:
    ends = endpoints(["10.0.0.0/8"])
    headers = [(b"Host", b"a.test"), (b"X-Forwarded-Host", b"evil.test"), (b"X-Forwarded-Proto", b"http")]
    scope = {"method": "GET", "headers": headers, "client": ("192.0.2.9", 1)}
    original = ends._original(ENVOY, b"/authz/envoy/x", scope)
    assert original is not None and (original.host, original.scheme) == ("a.test", "https")
    scope["client"] = ("10.0.0.1", 1)
    original = ends._original(ENVOY, b"/authz/envoy/x", scope)
    assert original is not None and (original.host, original.scheme) == ("evil.test", "http")
    # The first of duplicate headers counts, whatever the case of either.
    scope["headers"] = [(b"x-forwarded-host", b"one.test"), (b"X-FORWARDED-HOST", b"two.test")]
    original = ends._original(ENVOY, b"/authz/envoy/x", scope)
    assert original is not None and original.host == "one.test"


def original_headers_before(headers: list[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
    """What ``_original`` collected in a loop of its own before issue 15's one pass."""
    h: dict[bytes, bytes] = {}
    for name, value in headers:
        n = name.lower()
        if n.startswith((b"x-original-", b"x-forwarded-", b"host")):
            h.setdefault(n, value)
    return h


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(FACT_NAMES + ORIGINAL_NAMES), st.sampled_from(FACT_VALUES + ORIGINAL_VALUES)
        ),
        max_size=10,
    )
)
def test_one_pass_reads_the_facts_and_the_original_s_headers_as_two_did(
    headers: list[tuple[bytes, bytes]],
) -> None:
    # Fails on a pass that keeps the last of duplicate original headers, or that mixes up the
    # two reads' kinds (the proxy's read then collecting, or the decisions' missing a fact).
    for _ in range(2):  # the second time with every name classified
        h: dict[bytes, bytes] = {}
        assert RequestFacts.read(headers, COOKIE, h) == facts_before(headers, COOKIE)
        assert h == original_headers_before(headers)
        assert RequestFacts.read(headers, COOKIE) == facts_before(headers, COOKIE)


def test_the_original_s_names_stay_bounded() -> None:
    ends = endpoints([])
    for i in range(3000):
        headers = [(b"x-n-%d" % i, b"v"), (b"X-Forwarded-N-%d" % i, b"v")]
        ends._original(NGINX, b"/authz/nginx", {"method": "GET", "headers": headers})
    assert len(access_module._WITH_ORIGINAL) <= 1025
    assert len(access_module._LOWER) <= len(access_module._WITH_ORIGINAL)


def normalise_before(raw: bytes, *, reject_parameters: bool = True) -> str:
    """``normalise_path`` before issue 15's change (its test for the fast way)."""
    if not raw.startswith(b"/"):
        raise BadPath("the path must start with '/'")
    if (
        raw.isascii()
        and raw.find(b"%") == -1
        and raw.find(b"//") == -1
        and raw.find(b"/.") == -1
        and raw.find(b"\\") == -1
        and (not reject_parameters or raw.find(b";") == -1)
        and not raw.translate(None, _PCHAR_BYTES)  # every byte is a pchar (checked in C)
    ):
        return raw.decode("ascii")
    out = bytearray()
    decoded = bytearray()  # the path after one percent-decode: it must be UTF-8
    non_ascii = False
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if c == 0x25:  # "%"
            if i + 2 >= n:
                raise BadPath("truncated percent-encoding")
            h1, h2 = raw[i + 1], raw[i + 2]
            if h1 not in _HEX or h2 not in _HEX:
                raise BadPath("malformed percent-encoding")
            value = int(raw[i + 1 : i + 3], 16)
            if value in _FORBIDDEN_ESCAPES or value < 0x20 or value == 0x7F:
                raise BadPath("encoded '/', '\\' or control character in the path")
            if value == 0x3B and reject_parameters:
                raise BadPath("';' path parameters are not accepted")
            if value in _UNRESERVED:
                out.append(value)
            else:
                out += b"%" + raw[i + 1 : i + 3].upper()
            decoded.append(value)
            non_ascii = non_ascii or value >= 0x80
            i += 3
            continue
        if c not in _PCHAR:
            raise BadPath("invalid character in the path")
        if c == 0x3B and reject_parameters:
            raise BadPath("';' path parameters are not accepted")
        out.append(c)
        decoded.append(c)
        i += 1
    if 0x25 in decoded and _ESCAPE_AFTER_ONE_DECODE.search(decoded):
        raise BadPath("double percent-encoding in the path")
    if non_ascii:
        try:
            decoded.decode("utf-8")  # strict: overlong forms, surrogates and stray bytes fail
        except UnicodeDecodeError:
            raise BadPath("the path is not UTF-8 after percent-decoding") from None
    return _remove_dot_segments(out.decode("ascii"))


def outcome(fn: Any, raw: bytes, reject: bool) -> str:
    try:
        return str(fn(raw, reject_parameters=reject))
    except BadPath as exc:
        return f"BadPath: {exc}"


@settings(max_examples=1500, deadline=None)
@given(RAW_PATHS | st.binary(max_size=12), st.booleans())
def test_normalise_path_as_before(raw: bytes, reject: bool) -> None:
    assert outcome(normalise_path, raw, reject) == outcome(normalise_before, raw, reject)


@pytest.mark.parametrize("piece", [p.encode("latin-1") for p in PIECES])
@pytest.mark.parametrize("reject", [True, False])
def test_normalise_path_as_before_for_each_piece(piece: bytes, reject: bool) -> None:
    for raw in (b"/" + piece, b"/a" + piece + b"b", b"/x/" + piece + b"/y", piece):
        assert outcome(normalise_path, raw, reject) == outcome(normalise_before, raw, reject)
    assert _remove_dot_segments("/a/./b/../c") == "/a/c"


def test_a_presented_token_is_digested_once_and_the_memo_stays_bounded() -> None:
    access = Access.__new__(Access)
    access._digests = {}
    assert access._digest("ory_st_one") == digest("ory_st_one")
    assert access._digests == {"ory_st_one": digest("ory_st_one")}
    for i in range(3000):  # client-chosen tokens cannot grow it without bound
        assert access._digest(f"ory_st_{i}") == digest(f"ory_st_{i}")
    assert len(access._digests) <= 1024


def header_value_ok_before(value: str) -> bool:
    return all(c == "\t" or (c >= " " and c != "\x7f") for c in value)


def test_header_values_are_checked_as_before() -> None:
    chars = [chr(c) for c in [*range(0x300), 0x2028, 0x202E, 0xFEFF, 0x1F600, 0xD800]]
    values = ["", "alice@example.com", "a b", *chars]
    values += [f"ok{c}ok" for c in chars] + [f"{c}{d}" for c in "a\t\x7f\x85é" for d in "b\r\x00~"]
    for value in values:
        assert header_value_ok(value) == header_value_ok_before(value), repr(value)


def below_before(prefix: bytes, raw: bytes) -> bytes | None:
    if prefix:
        if raw == prefix or raw.startswith(prefix + b"/"):
            return raw[len(prefix) :] or b"/"
        return None
    return OwnPaths("", reject_parameters=True).below(raw)


@pytest.mark.parametrize("prefix", ["/.auth", "/a", "/.auth/x"])
def test_own_paths_below_as_before(prefix: str) -> None:
    paths = OwnPaths(prefix, reject_parameters=True)
    for raw in [b"", b"/", b"/.auth", b"/.auth/", b"/.authx", b"/.auth/x", b"/.auth/x/y", b"/a", b"/a/",
                b"/ab", b"/.au", b"/.auth//", b".auth/x", b"/.auth/x/"]:  # fmt: skip
        assert paths.below(raw) == below_before(prefix.encode(), raw), raw


def dialect_before(sub: bytes) -> Any:
    """``dialect_for`` before issue 15's one lookup for the exact paths."""
    if sub == b"/authz/nginx":
        return NGINX
    if sub == b"/authz/forward-auth":
        return FORWARD_AUTH
    if sub.startswith(b"/authz/envoy/") or sub == b"/authz/envoy":
        return ENVOY
    if sub.startswith(b"/decisions/") or sub == b"/decisions":
        return OATHKEEPER
    return None


@pytest.mark.parametrize(
    "sub",
    [
        b"/authz/nginx", b"/authz/nginx/", b"/authz/nginxx", b"/authz/forward-auth", b"/authz/forward-auth/x",
        b"/authz/envoy", b"/authz/envoy/", b"/authz/envoy/private/x", b"/authz/envoyx", b"/decisions",
        b"/decisions/", b"/decisions/private", b"/decisionsx", b"/authz", b"/", b"", b"/AUTHZ/NGINX",
    ],
)  # fmt: skip
def test_the_dialect_of_a_path_is_as_before(sub: bytes) -> None:
    # Fails on a lookup that forgets an exact path (``/decisions`` or ``/authz/envoy`` alone).
    assert dialect_for(sub) is dialect_before(sub)

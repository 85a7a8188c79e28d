"""``sidecar.security.emails``: one canonical form for an address, and look-alikes that meet in it."""

from __future__ import annotations

import unicodedata

import idna
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from sidecar.security.emails import InvalidEmail, _domain, _idna_domain, canonical_email
from sidecar.security.identifiers import normalize_identifier

REFUSED_CATEGORIES = ("Cc", "Cf", "Zl", "Zp", "Zs", "Co", "Cs", "Cn")


@pytest.mark.parametrize(
    ("typed", "canonical"),
    [
        pytest.param("Alice@Example.TEST", "alice@example.test", id="case"),
        pytest.param("  alice@example.test ", "alice@example.test", id="outer-spaces"),
        pytest.param("alice@example.test.", "alice@example.test", id="trailing-dot"),
        pytest.param("alice@exämple.test", "alice@xn--exmple-cua.test", id="idn"),
        pytest.param("alice@XN--EXMPLE-CUA.test", "alice@xn--exmple-cua.test", id="punycode"),
        pytest.param("alice@EXÄMPLE.test", "alice@xn--exmple-cua.test", id="idn-upper"),
        pytest.param("\uff41lice@example.test", "alice@example.test", id="fullwidth"),
        pytest.param("carol@example.te\u017ft", "carol@example.test", id="long-s"),
        pytest.param("Straße@example.test", "strasse@example.test", id="casefold"),
        pytest.param("jörg+tag@example.test", "jörg+tag@example.test", id="utf8-local"),
        pytest.param("a@localhost", "a@localhost", id="single-label"),
    ],
)
def test_canonical_forms(typed: str, canonical: str) -> None:
    assert canonical_email(typed) == canonical
    assert normalize_identifier(typed, "password") == canonical
    assert normalize_identifier(typed, "code", via="email") == canonical


@pytest.mark.parametrize(
    "typed",
    [
        pytest.param("bob@example.test\r\nBcc: eve@evil.test", id="crlf"),
        pytest.param("bob@example.test\n", id="trailing-lf"),
        pytest.param("alice@example.test\u200b", id="zero-width-space"),
        pytest.param("al\u200dice@example.test", id="zero-width-joiner"),
        pytest.param("\u202ealice@example.test", id="rtl-override"),
        pytest.param("alice@exa\u2066mple.test", id="isolate"),
        pytest.param("alice@x@example.test", id="two-at"),
        pytest.param("alice.example.test", id="no-at"),
        pytest.param('"a b"@example.test', id="quoted"),
        pytest.param("a..b@example.test", id="double-dot"),
        pytest.param("alice@exa_mple.test", id="underscore-domain"),
        pytest.param("alice@[192.0.2.1]", id="address-literal"),
        pytest.param("alice@", id="no-domain"),
        pytest.param("@example.test", id="no-local"),
        pytest.param("a" * 65 + "@example.test", id="local-too-long"),
        pytest.param("alice@xn--zz.test", id="bad-a-label"),
        pytest.param("al ice@example.test", id="inner-space"),
        pytest.param("alice@example..test", id="empty-label"),
    ],
)
def test_refused(typed: str) -> None:
    with pytest.raises(InvalidEmail):
        canonical_email(typed)


# --- properties -----------------------------------------------------------------------------------

ASCII_LOCAL = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+_-", min_size=1
)
LABEL = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=20)
UNICODE_LABEL = st.text(alphabet=st.characters(categories=("Ll", "Lu", "Lo", "Nd")), min_size=1, max_size=12)


@st.composite
def addresses(draw: st.DrawFn) -> str:
    local = draw(ASCII_LOCAL | st.text(alphabet=st.characters(categories=("L", "M", "N")), min_size=1))
    labels = draw(st.lists(LABEL | UNICODE_LABEL, min_size=1, max_size=3))
    return f"{local[:40]}@{'.'.join(labels)}.test"


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=60) | addresses())
@example("carol@example.te\u017ft")
@example("ǅ@example.test")  # titlecase digraph: casefold and NFKC must settle
def test_canonicalising_twice_changes_nothing(value: str) -> None:
    try:
        once = canonical_email(value)
    except InvalidEmail:
        return
    assert canonical_email(once) == once
    local, _, domain = once.partition("@")
    assert once.count("@") == 1 and local and domain.isascii() and domain == domain.lower()
    assert not any(unicodedata.category(ch) in REFUSED_CATEGORIES for ch in once)
    assert normalize_identifier(once) == once


@settings(max_examples=300, deadline=None)
@given(addresses())
def test_look_alikes_meet_in_one_form(value: str) -> None:
    try:
        canonical = canonical_email(value)
    except InvalidEmail:
        assume(False)
        return
    local, _, domain = value.partition("@")
    ascii_domain = canonical.partition("@")[2]
    assert ascii_domain == idna.encode(ascii_domain, uts46=True).decode()  # an A-label form
    if local.isascii() and domain.isascii():  # (dotless i upper-cases to "I": another letter)
        assert canonical_email(f"{local.upper()}@{domain.upper()}") == canonical
    assert canonical_email(f"{local}@{domain}.") == canonical
    assert canonical_email(f"  {value} ") == canonical
    # The internationalised domain and its punycode are one domain.
    assert canonical_email(f"{local}@{ascii_domain}") == canonical
    assert canonical_email(f"{local}@{ascii_domain.upper()}") == canonical
    fullwidth = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" and c != "@" else c for c in local)
    assert canonical_email(f"{fullwidth}@{domain}") == canonical


@settings(max_examples=300, deadline=None)
@given(
    addresses(),
    st.characters(categories=("Cc", "Cf", "Zl", "Zp")),
    st.integers(min_value=0),
)
def test_controls_and_invisible_characters_are_refused_anywhere(value: str, bad: str, at: int) -> None:
    position = at % (len(value) + 1)
    with pytest.raises(InvalidEmail):
        canonical_email(value[:position] + bad + value[position:])


# Domains near the plain-ASCII shortcut's edges: hyphens at the ends and at positions 3-4
# ("xn--"), upper case, digits, empty and 63/64-character labels, 253/254-character domains.
DOMAIN_LABEL = st.text(alphabet="abxnz09-AZ", min_size=0, max_size=8) | st.sampled_from(
    ["a" * 63, "a" * 64, "xn--exmple-cua", "xn--zz", "ab--c", "a--b", "-a", "a-", "1", "ä"]
)


@settings(max_examples=1000, deadline=None)
@given(st.lists(DOMAIN_LABEL, min_size=1, max_size=6), st.integers(min_value=0, max_value=250))
@example(["a" * 63, "b" * 63, "c" * 63, "d" * 61], 0)  # 253 characters
@example(["a" * 63, "b" * 63, "c" * 63, "d" * 62], 0)  # 254
@example(["ab--cd", "test"], 0)
def test_plain_ascii_domains_take_the_shortcut_to_the_same_answer(labels: list[str], padding: int) -> None:
    domain = ".".join(labels)
    if padding:
        domain = "a" * padding + "." + domain
    try:
        # _domain's steps before the shortcut: one root dot dropped, a domain left.
        stripped = domain.removesuffix(".")
        expected: str | type[InvalidEmail] = _idna_domain(stripped) if stripped else InvalidEmail
    except InvalidEmail:
        expected = InvalidEmail
    try:
        found: str | type[InvalidEmail] = _domain(domain)
    except InvalidEmail:
        found = InvalidEmail
    assert found == expected

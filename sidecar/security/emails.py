"""The one canonical form of an email address used as an identifier or an address.

Two strings that a person (or a mail system) would read as the same mailbox must be stored as the
same identifier, or a look-alike registers a second account and a recovery request for the
look-alike reaches the first one. The form, applied in this order:

1. outer spaces are trimmed (nothing else: a CR or LF anywhere is refused), the rest is Unicode
   NFKC (full-width and compatibility forms fold to their plain letters, as in PRECIS, RFC 8265);
2. refused: any control (Cc), format (Cf: zero-width spaces and joiners, bidi overrides and
   isolates), line/paragraph separator, private-use, surrogate or unassigned code point, and any
   whitespace left inside; these have no business in an address and make look-alikes;
3. exactly one ``@``, a non-empty local part and domain; no quoted local parts or comments: the
   local part is RFC 5322 ``dot-atom`` (plus non-ASCII letters, marks and digits, RFC 6532), at
   most 64 bytes;
4. the local part is case-folded (as Kratos lower-cases identifiers: almost every mail system
   treats local parts case-insensitively);
5. the domain loses one trailing ``.`` (the DNS root) and goes through IDNA 2008 with the UTS #46
   mapping (the ``idna`` package, STD3 rules): ``EXÄMPLE.test``, ``exämple.test`` and
   ``xn--exmple-cua.test`` are all ``xn--exmple-cua.test``, the ASCII form every mail system and
   HTTP header can carry.

The result is stable: canonicalising a canonical address gives it back unchanged.
"""

from __future__ import annotations

import re
import unicodedata

import idna

MAX_LOCAL_BYTES = 64
MAX_ADDRESS_LENGTH = 254
"""RFC 5321 §4.5.3.1: a path is at most 256 octets including the angle brackets."""

# RFC 5322 atext, plus "." between atoms (dot-atom); non-ASCII letters are allowed (RFC 6532).
_ATEXT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~")
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Zs", "Co", "Cs", "Cn"})

# Lower-case ASCII letters, digits and inner hyphens, labels of 1-63, none with "--" at positions
# 3-4 (A-labels such as "xn--...", whose Punycode idna must check): IDNA 2008 with the UTS #46
# mapping gives such a domain back unchanged, and idna takes ~5 us to say so, on every session
# load of the access path (tests/security/test_emails.py compares the two on generated domains).
_LDH_LABEL = r"(?![a-z0-9-]{2}--)(?!-)[a-z0-9-]{1,63}(?<!-)"
_PLAIN_DOMAIN = re.compile(rf"{_LDH_LABEL}(?:\.{_LDH_LABEL})*")


class InvalidEmail(ValueError):
    """The value is not an address sidecar accepts; ``str(exc)`` says why (safe to show)."""


def _check_characters(text: str) -> None:
    for ch in text:
        if unicodedata.category(ch) in _REFUSED_CATEGORIES:
            raise InvalidEmail(
                f"the address contains an invisible, control or space character (U+{ord(ch):04X})"
            )


def _fold(text: str) -> str:
    """Case folding then NFKC, repeated to a fixed point (one round is not always closed)."""
    for _ in range(4):
        folded = unicodedata.normalize("NFKC", text.casefold())
        if folded == text:
            break
        text = folded
    return text


def _local_part(local: str) -> str:
    if not local:
        raise InvalidEmail("the address has nothing before '@'")
    folded = _fold(local)
    if len(folded.encode("utf-8")) > MAX_LOCAL_BYTES:
        raise InvalidEmail(f"the part before '@' is longer than {MAX_LOCAL_BYTES} bytes")
    if folded.startswith(".") or folded.endswith(".") or ".." in folded:
        raise InvalidEmail("the part before '@' has a misplaced '.'")
    for ch in folded:
        if ch != "." and ch not in _ATEXT and (ch.isascii() or unicodedata.category(ch)[0] not in "LMN"):
            raise InvalidEmail(f"the part before '@' contains {ch!r}, which is not allowed")
    return folded


def _domain(domain: str) -> str:
    if domain.endswith("."):
        domain = domain[:-1]  # the DNS root: "example.test." is "example.test"
    if not domain:
        raise InvalidEmail("the address has no domain after '@'")
    if domain.startswith("["):
        raise InvalidEmail("address literals such as [192.0.2.1] are not accepted")
    if len(domain) <= 253 and _PLAIN_DOMAIN.fullmatch(domain):
        return domain
    return _idna_domain(domain)


def _idna_domain(domain: str) -> str:
    try:
        ascii_domain = idna.encode(domain, uts46=True, std3_rules=True, transitional=False).decode("ascii")
    except (idna.IDNAError, UnicodeError) as exc:
        raise InvalidEmail(f"the domain is not a valid (internationalised) domain name: {exc}") from None
    if not ascii_domain or ascii_domain.endswith("."):
        raise InvalidEmail("the domain is not a valid domain name")
    return ascii_domain


def canonical_email(value: str) -> str:
    """The canonical form of ``value``, or ``InvalidEmail`` saying why it is refused."""
    text = unicodedata.normalize("NFKC", value.strip(" "))
    _check_characters(text)
    if text.count("@") != 1:
        raise InvalidEmail("an address has exactly one '@'")
    local, _, domain = text.partition("@")
    address = f"{_local_part(local)}@{_domain(domain)}"
    if len(address.encode("utf-8")) > MAX_ADDRESS_LENGTH:
        raise InvalidEmail(f"the address is longer than {MAX_ADDRESS_LENGTH} bytes")
    return address


def is_canonical_email(value: str) -> bool:
    try:
        return canonical_email(value) == value
    except InvalidEmail:
        return False

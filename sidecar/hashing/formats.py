"""Verification of password hashes imported from other systems (kratos-api.md §2.1).

Each format is recognised by its prefix, as Kratos does in ``hash/hash_comparator.go``. Functions
here are synchronous and CPU-bound: ``PasswordHasher`` runs them in its thread pool. Every digest
comparison uses ``hmac.compare_digest``. ``parse`` raises ``ValueError`` with the reason a hash
is refused; ``verify`` turns any malformed input into ``False``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Callable
from dataclasses import dataclass

import argon2.low_level
import bcrypt
from passlib.crypto.digest import lookup_hash
from passlib.hash import md5_crypt, sha256_crypt, sha512_crypt

from sidecar.hashing import firebase

# Kratos' import limits: bigger parameters would let an import pin a CPU or exhaust memory.
ARGON2_MAX_MEMORY_KIB = 1024 * 1024
ARGON2_MAX_ITERATIONS = 10
ARGON2_MAX_PARALLELISM = 16
BCRYPT_MAX_COST = 15
PBKDF2_MAX_ITERATIONS = 10_000_000
SCRYPT_MAX_N = 131072
SCRYPT_MAX_R = 8
SCRYPT_MAX_P = 10
FIRESCRYPT_MAX_LN = 17
# sha256-crypt / sha512-crypt accept up to 999,999,999 rounds: minutes of CPU for each sign-in
# attempt. glibc's default is 5,000 and passlib's 535,000 / 656,000.
SHA_CRYPT_MAX_ROUNDS = 1_000_000
BCRYPT_MAX_BYTES = 72

_DIGESTS = {"sha1": 20, "sha224": 28, "sha256": 32, "sha384": 48, "sha512": 64}
_HMAC_DIGESTS = ("md4", "md5", "sha1", "sha224", "sha256", "sha384", "sha512")
_SSHA = {"{SSHA}": "sha1", "{SSHA256}": "sha256", "{SSHA512}": "sha512"}
_CRYPT = {"md5-crypt": ("$1$", md5_crypt), "sha256-crypt": ("$5$", sha256_crypt)}
_CRYPT["sha512-crypt"] = ("$6$", sha512_crypt)
_PARAMS = re.compile(r"^([a-z]+=\d+)(,[a-z]+=\d+)*$")


def b64decode(text: str) -> bytes:
    """Standard base64, padded or not (imports mix both)."""
    bare = text.rstrip("=")
    if not re.fullmatch(r"[A-Za-z0-9+/]*", bare) or len(text) - len(bare) > 2:
        raise ValueError("invalid base64")
    try:
        return base64.b64decode(bare + "=" * (-len(bare) % 4), validate=True)
    except binascii.Error as exc:
        raise ValueError("invalid base64") from exc


def _params(text: str) -> dict[str, int]:
    if not _PARAMS.match(text):
        raise ValueError(f"malformed parameters {text!r}")
    return {k: int(v) for k, v in (item.split("=", 1) for item in text.split(","))}


def _need(params: dict[str, int], *keys: str) -> list[int]:
    missing = [k for k in keys if k not in params]
    if missing:
        raise ValueError(f"missing parameter(s) {', '.join(missing)}")
    return [params[k] for k in keys]


def _limit(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ValueError(f"{name}={value} is outside the accepted range {low}..{high}")


Check = Callable[[bytes], bool]


def lane_threads(lanes: int) -> int:
    """Threads for an argon2 computation of ``lanes`` lanes: no more than the CPUs this process may
    run on (``os.sched_getaffinity``).

    Lanes beyond the CPUs cannot run at the same time, and libargon2 starts a thread per lane for
    each of its 4 x ``t`` segments (24 threads per default hash, p=2 t=3). On a server held to
    one CPU each of those is a new task at the hashing priority that the scheduler places on the
    event loop's CPU: measured with ``perf sched`` during 20 concurrent logins (issue 15), the
    event loop waited > 0.5 ms behind the hashing process in about 190 c1 decisions per 5 s with
    a thread per lane, 55 with one thread; the hash value is the same either way (RFC 9106: the
    lanes, not the threads, define it).
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no affinity on this platform
        cpus = os.cpu_count() or 1
    return max(1, min(lanes, cpus))


def argon2_digest(
    password: bytes,
    salt: bytes,
    *,
    kind: argon2.low_level.Type,
    time_cost: int,
    memory_kib: int,
    lanes: int,
    length: int,
) -> bytes:
    """The raw argon2 (version 19) digest, computed on ``lane_threads(lanes)`` threads;
    ``ValueError`` when libargon2 refuses the parameters."""
    ffi, lib = argon2.low_level.ffi, argon2.low_level.lib  # type: ignore[attr-defined]
    out = ffi.new("uint8_t[]", length)
    c_password = ffi.new("uint8_t[]", password)
    c_salt = ffi.new("uint8_t[]", salt)
    context = ffi.new(
        "argon2_context *",
        {
            "out": out,
            "outlen": length,
            "pwd": c_password,
            "pwdlen": len(password),
            "salt": c_salt,
            "saltlen": len(salt),
            "secret": ffi.NULL,
            "secretlen": 0,
            "ad": ffi.NULL,
            "adlen": 0,
            "t_cost": time_cost,
            "m_cost": memory_kib,
            "lanes": lanes,
            "threads": lane_threads(lanes),
            "version": argon2.low_level.ARGON2_VERSION,
            "allocate_cbk": ffi.NULL,
            "free_cbk": ffi.NULL,
            "flags": lib.ARGON2_DEFAULT_FLAGS,
        },
    )
    code = argon2.low_level.core(context, kind.value)
    if code != lib.ARGON2_OK:
        raise ValueError(argon2.low_level.error_to_str(code))
    return bytes(ffi.buffer(out, length))


def b64encode(data: bytes) -> str:
    """Standard base64 without padding, as argon2's encoded hashes write salt and digest."""
    return base64.b64encode(data).decode().rstrip("=")


@dataclass(frozen=True, slots=True)
class ParsedHash:
    """A recognised hash: its algorithm name and a checker bound to its parameters."""

    algorithm: str
    check: Check


def _argon2(encoded: str) -> ParsedHash:
    parts = encoded.split("$")
    if len(parts) != 6 or parts[2] != "v=19":
        raise ValueError("argon2 hashes look like $argon2id$v=19$m=..,t=..,p=..$salt$hash")
    m, t, p = _need(_params(parts[3]), "m", "t", "p")
    _limit("m", m, 8, ARGON2_MAX_MEMORY_KIB)
    _limit("t", t, 1, ARGON2_MAX_ITERATIONS)
    _limit("p", p, 1, ARGON2_MAX_PARALLELISM)
    salt, expected = b64decode(parts[4]), b64decode(parts[5])
    kind = argon2.low_level.Type.ID if parts[1] == "argon2id" else argon2.low_level.Type.I

    def check(password: bytes) -> bool:
        digest = argon2_digest(
            password, salt, kind=kind, time_cost=t, memory_kib=m, lanes=p, length=len(expected)
        )
        return hmac.compare_digest(digest, expected)

    return ParsedHash(parts[1], check)


def _bcrypt(encoded: str) -> ParsedHash:
    m = re.fullmatch(r"\$(2[aby]?)\$(\d\d)\$[./A-Za-z0-9]{53}", encoded)
    if not m:
        raise ValueError("bcrypt hashes look like $2a$<cost>$<53 characters>")
    _limit("cost", int(m.group(2)), 4, BCRYPT_MAX_COST)
    # The bcrypt package knows $2a$/$2b$/$2y$; the original $2$ variant hashes the same way.
    raw = ("$2a$" + encoded[3:] if m.group(1) == "2" else encoded).encode()

    def check(password: bytes) -> bool:
        if len(password) > BCRYPT_MAX_BYTES:  # never compare a silently truncated password
            return False
        return bcrypt.checkpw(password, raw)

    return ParsedHash("bcrypt", check)


def _pbkdf2(encoded: str) -> ParsedHash:
    parts = encoded.split("$")
    digest = parts[1].removeprefix("pbkdf2-") if len(parts) == 5 else ""
    if digest not in _DIGESTS:
        raise ValueError("pbkdf2 hashes look like $pbkdf2-sha256$i=..,l=..$salt$hash")
    iterations, key_length = _need(_params(parts[2]), "i", "l")
    _limit("i", iterations, 1, PBKDF2_MAX_ITERATIONS)
    salt, expected = b64decode(parts[3]), b64decode(parts[4])
    _limit("l", key_length, 1, 1024)

    def check(password: bytes) -> bool:
        derived = hashlib.pbkdf2_hmac(digest, password, salt, iterations, key_length)
        return hmac.compare_digest(derived, expected)

    return ParsedHash(parts[1], check)


def _scrypt(encoded: str) -> ParsedHash:
    parts = encoded.split("$")
    if len(parts) != 5:
        raise ValueError("scrypt hashes look like $scrypt$ln=..,r=..,p=..$salt$hash")
    n, r, p = _need(_params(parts[2]), "ln", "r", "p")
    _limit("ln", n, 2, SCRYPT_MAX_N)
    if n & (n - 1):
        raise ValueError(f"ln={n} must be a power of two")
    _limit("r", r, 1, SCRYPT_MAX_R)
    _limit("p", p, 1, SCRYPT_MAX_P)
    salt, expected = b64decode(parts[3]), b64decode(parts[4])

    def check(password: bytes) -> bool:
        derived = hashlib.scrypt(
            password, salt=salt, n=n, r=r, p=p, dklen=len(expected), maxmem=256 * 1024 * 1024
        )
        return hmac.compare_digest(derived, expected)

    return ParsedHash("scrypt", check)


def _firescrypt(encoded: str) -> ParsedHash:
    parts = encoded.split("$")
    if len(parts) != 7:
        raise ValueError("firescrypt hashes look like $firescrypt$ln=..,r=..,p=..$salt$hash$separator$key")
    ln, r, p = _need(_params(parts[2]), "ln", "r", "p")
    _limit("ln", ln, 1, FIRESCRYPT_MAX_LN)
    _limit("r", r, 1, SCRYPT_MAX_R)
    _limit("p", p, 1, SCRYPT_MAX_P)
    salt, expected, separator, signer = (b64decode(x) for x in parts[3:7])

    def check(password: bytes) -> bool:
        derived = firebase.firebase_scrypt(password, salt, separator, signer, ln=ln, r=r, p=p)
        return hmac.compare_digest(derived, expected)

    return ParsedHash("firescrypt", check)


def _patterned(encoded: str, digest: str) -> ParsedHash:
    """``$<digest>$pf=<b64 pattern>$<b64 salt>$<b64 hash>`` or (md5 only) ``$md5$<b64 hash>``."""
    parts = encoded.split("$")
    if len(parts) == 3 and digest == "md5":
        pattern, salt, expected = b"{PASSWORD}", b"", b64decode(parts[2])
    elif len(parts) == 5 and parts[2].startswith("pf="):
        pattern, salt, expected = b64decode(parts[2][3:]), b64decode(parts[3]), b64decode(parts[4])
        if b"{PASSWORD}" not in pattern:
            raise ValueError("the pattern must contain {PASSWORD}")
    else:
        raise ValueError(f"{digest} hashes look like ${digest}$pf=<pattern>$<salt>$<hash>")

    def check(password: bytes) -> bool:
        message = pattern.replace(b"{SALT}", salt).replace(b"{PASSWORD}", password)
        return hmac.compare_digest(hashlib.new(digest, message).digest(), expected)

    return ParsedHash(digest, check)


def _ssha(encoded: str, prefix: str) -> ParsedHash:
    digest = _SSHA[prefix]
    blob = b64decode(encoded[len(prefix) :])
    size = _DIGESTS[digest]
    if len(blob) <= size:
        raise ValueError(f"{prefix} hash is too short to hold a digest and a salt")
    expected, salt = blob[:size], blob[size:]

    def check(password: bytes) -> bool:
        return hmac.compare_digest(hashlib.new(digest, password + salt).digest(), expected)

    return ParsedHash(prefix.strip("{}").lower(), check)


def _crypt(encoded: str, name: str) -> ParsedHash:
    prefix, handler = _CRYPT[name]
    rewritten = prefix + encoded[len(name) + 2 :]
    if not handler.identify(rewritten):
        raise ValueError(f"malformed {name} hash")
    try:
        parsed = handler.from_string(rewritten)
    except ValueError as exc:
        raise ValueError(f"malformed {name} hash: {exc}") from exc
    rounds = getattr(parsed, "rounds", None)  # md5-crypt has a fixed cost
    if rounds is not None:
        _limit("rounds", int(rounds), 1, SHA_CRYPT_MAX_ROUNDS)

    def check(password: bytes) -> bool:
        return bool(handler.verify(password, rewritten))

    return ParsedHash(name, check)


def _hmac(encoded: str, digest: str) -> ParsedHash:
    parts = encoded.split("$")
    if len(parts) != 4:
        raise ValueError(f"hmac hashes look like $hmac-{digest}$<b64 hash>$<b64 key>")
    expected, key = b64decode(parts[2]), b64decode(parts[3])
    # OpenSSL 3 dropped MD4 from its default provider; passlib falls back to a pure-Python one.
    constructor = lookup_hash(digest).const

    def check(password: bytes) -> bool:
        return hmac.compare_digest(hmac.new(key, password, constructor).digest(), expected)

    return ParsedHash(f"hmac-{digest}", check)


def parse(encoded: str) -> ParsedHash:
    """Recognise ``encoded``; ``ValueError`` says why a hash is unknown or over Kratos' limits."""
    for prefix in _SSHA:
        if encoded.startswith(prefix):
            return _ssha(encoded, prefix)
    head = encoded.split("$")[1] if encoded.startswith("$") and encoded.count("$") >= 2 else ""
    if head in ("argon2id", "argon2i"):
        return _argon2(encoded)
    if head in ("2", "2a", "2b", "2y"):
        return _bcrypt(encoded)
    if head.startswith("pbkdf2-"):
        return _pbkdf2(encoded)
    if head == "scrypt":
        return _scrypt(encoded)
    if head == "firescrypt":
        return _firescrypt(encoded)
    if head in ("sha1", "sha256", "sha512", "md5"):
        return _patterned(encoded, head)
    if head in _CRYPT:
        return _crypt(encoded, head)
    if head.startswith("hmac-") and head[5:] in _HMAC_DIGESTS:
        return _hmac(encoded, head[5:])
    raise ValueError("unknown password hash format")


def verify(password: str, encoded: str) -> bool:
    """True when ``password`` matches ``encoded``; malformed or unknown hashes give False."""
    try:
        return parse(encoded).check(password.encode())
    except (ValueError, TypeError, OverflowError, MemoryError):
        return False

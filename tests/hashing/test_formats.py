"""Import formats (kratos-api.md §2.1), each checked against a vector made by another implementation."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any
from unittest import mock

import argon2
import bcrypt
import pytest

from sidecar.hashing import formats, work
from sidecar.hashing.firebase import firebase_scrypt
from sidecar.hashing.work import Params

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt  # libxcrypt's crypt(3): an implementation independent of passlib

PW = "correct horse battery staple"


def b64(data: bytes, *, pad: bool = True) -> str:
    text = base64.b64encode(data).decode()
    return text if pad else text.rstrip("=")


def _argon2(kind: argon2.Type) -> str:
    return argon2.PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1, type=kind).hash(PW)


def _bcrypt(prefix: str) -> str:
    encoded = bcrypt.hashpw(PW.encode(), bcrypt.gensalt(4)).decode()
    return prefix + encoded[4:]


def _pbkdf2(name: str) -> str:
    salt = b"NaCl-and-pepper!"
    key = hashlib.pbkdf2_hmac(name, PW.encode(), salt, 1000, 32)
    return f"$pbkdf2-{name}$i=1000,l=32${b64(salt, pad=False)}${b64(key, pad=False)}"


def _scrypt() -> str:
    salt = b"0123456789abcdef"
    key = hashlib.scrypt(PW.encode(), salt=salt, n=1024, r=8, p=1, dklen=32)
    return f"$scrypt$ln=1024,r=8,p=1${b64(salt)}${b64(key)}"


def _patterned(digest: str, pattern: bytes, salt: bytes) -> str:
    message = pattern.replace(b"{SALT}", salt).replace(b"{PASSWORD}", PW.encode())
    value = hashlib.new(digest, message).digest()
    return f"${digest}$pf={b64(pattern)}${b64(salt)}${b64(value)}"


def _ssha(prefix: str, digest: str) -> str:
    salt = b"\x01\x02salt\xff"
    return prefix + b64(hashlib.new(digest, PW.encode() + salt).digest() + salt)


def _crypt(kind: str, method: crypt._Method) -> str:
    full = crypt.crypt(PW, crypt.mksalt(method))
    return f"${kind}${full.split('$', 2)[2]}"


def _hmac(digest: str) -> str:
    key = b"server-side key"
    return f"$hmac-{digest}${b64(hmac.new(key, PW.encode(), digest).digest())}${b64(key)}"


VECTORS = [
    pytest.param(_argon2(argon2.Type.ID), id="argon2id"),
    pytest.param(_argon2(argon2.Type.I), id="argon2i"),
    pytest.param(_bcrypt("$2b$"), id="bcrypt-2b"),
    pytest.param(_bcrypt("$2a$"), id="bcrypt-2a"),
    pytest.param(_bcrypt("$2y$"), id="bcrypt-2y"),
    pytest.param(_bcrypt("$2$"), id="bcrypt-2"),
    *[pytest.param(_pbkdf2(d), id=f"pbkdf2-{d}") for d in ("sha1", "sha224", "sha256", "sha384", "sha512")],
    pytest.param(_scrypt(), id="scrypt"),
    pytest.param(_patterned("sha1", b"{SALT}{PASSWORD}", b"s4lt"), id="sha1-pf"),
    pytest.param(_patterned("sha256", b"{PASSWORD}:{SALT}", b"s4lt"), id="sha256-pf"),
    pytest.param(_patterned("sha512", b"{PASSWORD}", b""), id="sha512-unsalted"),
    pytest.param(_patterned("md5", b"{SALT}{PASSWORD}{SALT}", b"xy"), id="md5-pf"),
    pytest.param(f"$md5${b64(hashlib.md5(PW.encode()).digest())}", id="md5"),
    pytest.param(_ssha("{SSHA}", "sha1"), id="ssha"),
    pytest.param(_ssha("{SSHA256}", "sha256"), id="ssha256"),
    pytest.param(_ssha("{SSHA512}", "sha512"), id="ssha512"),
    pytest.param(_crypt("md5-crypt", crypt.METHOD_MD5), id="md5-crypt"),
    pytest.param(_crypt("sha256-crypt", crypt.METHOD_SHA256), id="sha256-crypt"),
    pytest.param(_crypt("sha512-crypt", crypt.METHOD_SHA512), id="sha512-crypt"),
    pytest.param(_hmac("md5"), id="hmac-md5"),
    pytest.param(_hmac("sha1"), id="hmac-sha1"),
    pytest.param(_hmac("sha256"), id="hmac-sha256"),
    pytest.param(_hmac("sha512"), id="hmac-sha512"),
]


@pytest.mark.parametrize("encoded", VECTORS)
def test_verifies_independent_vector(encoded: str) -> None:
    formats.parse(encoded)
    assert formats.verify(PW, encoded)
    assert not formats.verify(PW + "!", encoded)
    assert not formats.verify("", encoded)


def test_pbkdf2_rfc6070_vector() -> None:
    key = bytes.fromhex("0c60c80f961f0e71f3a9b524af6012062fe037a6")
    encoded = f"$pbkdf2-sha1$i=1,l=20${b64(b'salt', pad=False)}${b64(key, pad=False)}"
    assert formats.verify("password", encoded)


def test_scrypt_rfc7914_vector() -> None:
    key = bytes.fromhex(
        "7023bdcb3afd7348461c06cd81fd38ebfda8fbba904f8e3ea9b543f6545da1f2"
        "d5432955613f0fcf62d49705242a9af9e61e85dc0d651e40dfcf017b45575887"
    )
    encoded = f"$scrypt$ln=16384,r=8,p=1${b64(b'SodiumChloride')}${b64(key)}"
    assert formats.verify("pleaseletmein", encoded)


def test_firescrypt_firebase_published_vector() -> None:
    """The example from github.com/firebase/scrypt's README."""
    salt, separator = "42xEC+ixf3L2lw==", "Bw=="
    signer = "jxspr8Ki0RYycVU8zykbdLGjFQ3McFUH0uiiTvC8pVMXAn210wjLNmdZJzxUECKbm0QsEmYUSDzZvpjeJ9WmXA=="
    expected = "lSrfV15cpx95/sZS2W9c9Kp6i/LVgQNDNC/qzrCnh1SAyZvqmZqAjTdn3aoItz+VHjoZilo78198JAdRuid5lQ=="
    encoded = f"$firescrypt$ln=14,r=8,p=1${salt}${expected}${separator}${signer}"
    assert formats.verify("user1password", encoded)
    assert not formats.verify("user1passwords", encoded)


def test_firescrypt_matches_its_definition() -> None:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    salt, sep, signer = b"salty", b"\x07", bytes(range(64))
    key = hashlib.scrypt(PW.encode(), salt=salt + sep, n=2**10, r=8, p=1, dklen=32)
    enc = Cipher(algorithms.AES(key), modes.CTR(b"\0" * 16)).encryptor()
    assert firebase_scrypt(PW.encode(), salt, sep, signer, ln=10, r=8, p=1) == enc.update(signer)


def test_bcrypt_rejects_passwords_over_72_bytes() -> None:
    encoded = bcrypt.hashpw(b"a" * 72, bcrypt.gensalt(4)).decode()
    assert formats.verify("a" * 72, encoded)
    assert not formats.verify("a" * 73, encoded)  # bcrypt itself would truncate and accept


@pytest.mark.parametrize(
    ("encoded", "reason"),
    [
        pytest.param("$argon2id$v=19$m=2097152,t=1,p=1$c2FsdHNhbHQ$aGFzaA", "m=2097152", id="argon2-memory"),
        pytest.param("$argon2id$v=19$m=1024,t=11,p=1$c2FsdHNhbHQ$aGFzaA", "t=11", id="argon2-iterations"),
        pytest.param("$argon2id$v=19$m=1024,t=1,p=17$c2FsdHNhbHQ$aGFzaA", "p=17", id="argon2-parallelism"),
        pytest.param("$2a$16$" + "a" * 53, "cost=16", id="bcrypt-cost"),
        pytest.param("$pbkdf2-sha256$i=10000001,l=32$c2FsdA$aGFzaA", "i=10000001", id="pbkdf2-iter"),
        pytest.param("$pbkdf2-md5$i=1,l=32$c2FsdA$aGFzaA", "pbkdf2", id="pbkdf2-digest"),
        pytest.param("$scrypt$ln=262144,r=8,p=1$c2FsdA==$aGFzaA==", "ln=262144", id="scrypt-n"),
        pytest.param("$scrypt$ln=1024,r=9,p=1$c2FsdA==$aGFzaA==", "r=9", id="scrypt-r"),
        pytest.param("$firescrypt$ln=18,r=8,p=1$a$b$c$d", "ln=18", id="firescrypt-ln"),
        pytest.param(
            "$sha512-crypt$rounds=999999999$saltsalt$" + "a" * 86,
            "rounds=999999999",
            id="sha512-crypt-rounds",
        ),
        pytest.param(
            "$sha256-crypt$rounds=1000001$saltsalt$" + "a" * 43, "rounds=1000001", id="sha256-crypt-rounds"
        ),
        pytest.param("$sha1$pf=e1NBTFR9$c2FsdA==$aGFzaA==", "{PASSWORD}", id="sha-pattern"),
        pytest.param("{SSHA}aGFzaA==", "too short", id="ssha-short"),
        pytest.param("$whirlpool$abc", "unknown", id="unknown"),
        pytest.param("plaintext", "unknown", id="plain"),
        pytest.param("$argon2id$v=19$m=1024,t=1,p=1$!!!$aGFzaA", "base64", id="bad-base64"),
    ],
)
def test_parse_refuses(encoded: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason.replace("{", r"\{").replace("$", r"\$")):
        formats.parse(encoded)
    assert formats.verify("x", encoded) is False


def test_base64_accepts_padded_and_unpadded() -> None:
    assert formats.b64decode("aGk") == formats.b64decode("aGk=") == b"hi"
    with pytest.raises(ValueError):
        formats.b64decode("a=b")


@pytest.mark.parametrize(
    ("lanes", "salt", "length"),
    [pytest.param(2, b"0123456789abcdef", 32, id="p2"), pytest.param(3, b"eight-by", 64, id="p3-odd-sizes")],
)
def test_argon2_with_several_lanes_matches_the_reference(lanes: int, salt: bytes, length: int) -> None:
    """Whatever the threads, the lanes define the hash: the same string as argon2-cffi's, both ways."""
    reference = argon2.low_level.hash_secret(
        PW.encode(),
        salt,
        time_cost=2,
        memory_cost=1024,
        parallelism=lanes,
        hash_len=length,
        type=argon2.Type.ID,
    ).decode()
    params = Params("argon2", 1024, 2, lanes, length, len(salt), 4)
    with mock.patch("secrets.token_bytes", return_value=salt):
        ours = work.hash_password(params, PW.encode())
    assert ours == reference
    assert formats.verify(PW, reference)
    assert not formats.verify(PW + "!", reference)
    assert argon2.PasswordHasher().verify(ours, PW)


def _on_one_cpu(action: Callable[[], object]) -> tuple[object, float]:
    """``action``'s result, run in a thread held to one CPU, and the share of the process's CPU time
    that this thread used meanwhile (1.0: nothing ran in other threads)."""
    out: dict[str, Any] = {}

    def run() -> None:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        cpu, thread = time.process_time(), time.thread_time()
        out["result"] = action()
        out["share"] = (time.thread_time() - thread) / (time.process_time() - cpu)

    worker = threading.Thread(target=run)
    worker.start()
    worker.join()
    return out["result"], out["share"]


def test_argon2_on_one_cpu_starts_no_lane_threads() -> None:
    """Held to one CPU, a hash of 2 lanes runs in the calling thread: libargon2 would otherwise
    start a thread per lane and segment (24 for p=2 t=3), each a new task on the event loop's CPU
    (issue 15). Before, the caller only waited: its share of the CPU time was about 0."""
    params = Params("argon2", 16 * 1024, 3, 2, 32, 16, 4)
    encoded, share = _on_one_cpu(lambda: work.hash_password(params, PW.encode()))
    assert share > 0.9
    assert argon2.extract_parameters(str(encoded)).parallelism == 2
    ok, share = _on_one_cpu(lambda: formats.verify(PW, str(encoded)))
    assert ok is True and share > 0.9


def test_lane_threads_follow_the_cpus_of_the_caller() -> None:
    cpus = len(os.sched_getaffinity(0))
    assert formats.lane_threads(1) == 1
    assert formats.lane_threads(16) == min(16, cpus)
    assert _on_one_cpu(lambda: formats.lane_threads(4))[0] == 1

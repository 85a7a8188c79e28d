"""Encryption of stored secrets (the providers' OIDC tokens) with ``secrets.cipher``.

AES-256-GCM, Kratos' ``ciphers.algorithm: aes`` layout: ``hex(nonce || ciphertext || tag)`` with
the 32-character secret as the key, so a value written by Kratos decrypts here and back. The
first secret encrypts; every secret is tried on decryption, which is how keys are rotated.
"""

from __future__ import annotations

import binascii
import os
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12


class CipherError(Exception):
    """The value was not encrypted with any of the configured secrets (or was tampered with)."""


class Cipher:
    def __init__(self, secrets: Sequence[str]) -> None:
        keys = [s.encode() for s in secrets]
        if not keys or any(len(k) != 32 for k in keys):
            raise ValueError("secrets.cipher needs 32-byte secrets")
        self._aeads = [AESGCM(k) for k in keys]

    def encrypt(self, plaintext: str) -> str:
        nonce = os.urandom(NONCE_BYTES)
        return (nonce + self._aeads[0].encrypt(nonce, plaintext.encode(), None)).hex()

    def decrypt(self, value: str) -> str:
        try:
            raw = binascii.unhexlify(value)
        except (binascii.Error, ValueError):
            raise CipherError("not an encrypted value") from None
        nonce, sealed = raw[:NONCE_BYTES], raw[NONCE_BYTES:]
        for aead in self._aeads:
            try:
                return aead.decrypt(nonce, sealed, None).decode()
            except (InvalidTag, ValueError):
                continue
        raise CipherError("no configured secret decrypts this value")


def cipher_from(secrets: Sequence[str]) -> Cipher | None:
    """A cipher when ``secrets.cipher`` is set; None otherwise (tokens are then not kept at all)."""
    return Cipher(secrets) if secrets else None

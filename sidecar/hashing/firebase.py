"""Firebase's modified scrypt (``firescrypt`` imports, kratos-api.md §2.1).

Firebase does not store the scrypt output itself: it derives a 32-byte key with
scrypt(password, salt + salt_separator, N=2^mem_cost, r=rounds, p) and stores the project's
signer key encrypted under that key with AES-256-CTR and an all-zero IV. Verifying means
deriving the key again and comparing ciphertexts (github.com/firebase/scrypt, Kratos
``hash/hash_comparator.go``).
"""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

KEY_LENGTH = 32


def firebase_scrypt(
    password: bytes, salt: bytes, separator: bytes, signer_key: bytes, *, ln: int, r: int, p: int
) -> bytes:
    """The value Firebase stores as the password hash for these parameters."""
    n = 1 << ln
    key = hashlib.scrypt(
        password, salt=salt + separator, n=n, r=r, p=p, dklen=KEY_LENGTH, maxmem=256 * 1024 * 1024
    )
    encryptor = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
    return encryptor.update(signer_key) + encryptor.finalize()

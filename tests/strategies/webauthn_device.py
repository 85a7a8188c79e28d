"""A software WebAuthn authenticator (ES256, ``none`` attestation) for API-level tests.

It answers the ``{"publicKey": ...}`` options a flow carries with the JSON ``webauthn.js`` would
send, and can be told to lie: another origin or RP id, a chosen signature counter, another
credential id. (PyPI's ``soft-webauthn`` pins ``fido2`` 1.x, whose ``cryptography<45`` conflicts
with py_webauthn 3's ``cryptography>=49``; this is the same idea in 70 lines.)
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

UP, UV, AT = 0x01, 0x04, 0x40


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SoftAuthenticator:
    def __init__(self, origin: str = "http://127.0.0.1:4433", *, user_verified: bool = True) -> None:
        self.origin = origin
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.credential_id = os.urandom(32)
        self.sign_count = 0
        self.user_handle: bytes | None = None
        self.rp_id: str | None = None
        self.flags = UP | (UV if user_verified else 0)

    def _cose(self) -> bytes:
        numbers = self.key.public_key().public_numbers()
        x, y = numbers.x.to_bytes(32, "big"), numbers.y.to_bytes(32, "big")
        return cbor2.dumps({1: 2, 3: -7, -1: 1, -2: x, -3: y})

    def _client_data(self, kind: str, challenge: str, origin: str | None) -> bytes:
        data = {"type": kind, "challenge": challenge, "origin": origin or self.origin, "crossOrigin": False}
        return json.dumps(data).encode()

    def create(self, options: dict[str, Any], *, origin: str | None = None, rp_id: str | None = None) -> str:
        """``navigator.credentials.create``: the attestation JSON as the form field carries it."""
        pk = options["publicKey"]
        self.rp_id = rp_id or pk["rp"]["id"]
        self.user_handle = unb64url(pk["user"]["id"])
        client_data = self._client_data("webauthn.create", pk["challenge"], origin)
        attested = bytes(16) + struct.pack(">H", len(self.credential_id)) + self.credential_id + self._cose()
        rp_hash = hashlib.sha256((rp_id or pk["rp"]["id"]).encode()).digest()
        auth_data = rp_hash + bytes([self.flags | AT]) + struct.pack(">I", self.sign_count) + attested
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        return json.dumps(
            {
                "id": b64url(self.credential_id),
                "rawId": b64url(self.credential_id),
                "type": "public-key",
                "response": {
                    "clientDataJSON": b64url(client_data),
                    "attestationObject": b64url(attestation),
                },
            }
        )

    def get(
        self,
        options: dict[str, Any],
        *,
        origin: str | None = None,
        rp_id: str | None = None,
        counter: int | None = None,
        credential_id: bytes | None = None,
    ) -> str:
        """``navigator.credentials.get``: the assertion JSON, signed with the device key."""
        pk = options["publicKey"]
        if counter is None:
            self.sign_count += 1
            counter = self.sign_count
        client_data = self._client_data("webauthn.get", pk["challenge"], origin)
        rp_hash = hashlib.sha256((rp_id or pk.get("rpId") or self.rp_id or "").encode()).digest()
        auth_data = rp_hash + bytes([self.flags]) + struct.pack(">I", counter)
        signature = self.key.sign(auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256()))
        raw_id = credential_id or self.credential_id
        return json.dumps(
            {
                "id": b64url(raw_id),
                "rawId": b64url(raw_id),
                "type": "public-key",
                "response": {
                    "authenticatorData": b64url(auth_data),
                    "clientDataJSON": b64url(client_data),
                    "signature": b64url(signature),
                    "userHandle": b64url(self.user_handle or b""),
                },
            }
        )

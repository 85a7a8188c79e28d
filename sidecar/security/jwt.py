"""Short-lived signed JWTs for the upstream, and the JWKS that verifies them.

JOSE comes from joserfc (authlib's successor for JOSE; ``authlib.jose`` is deprecated).
Signing keys are derived from the configured secrets with HKDF, so every worker and replica
signs with the same key and publishes the same JWKS with no key exchange; the first secret signs,
all are published, so rotating secrets rotates keys without breaking verifiers mid-flight.
RS256 cannot be derived cheaply, so it uses a per-process key (one worker, or verifiers that
accept any key of each worker's JWKS); ES256 (the default) and EdDSA are recommended.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, OKPKey, RSAKey

log = logging.getLogger("sidecar.security")

_P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _derive(secret: str, alg: str) -> Any:
    material = HKDF(algorithm=SHA256(), length=48, salt=b"sidecar-upstream-jwt", info=alg.encode()).derive(
        secret.encode()
    )
    if alg == "ES256":
        scalar = int.from_bytes(material, "big") % (_P256_ORDER - 1) + 1
        return ECKey.import_key(ec.derive_private_key(scalar, ec.SECP256R1()))
    if alg == "EdDSA":
        return OKPKey.import_key(ed25519.Ed25519PrivateKey.from_private_bytes(material[:32]))
    return RSAKey.import_key(rsa.generate_private_key(public_exponent=65537, key_size=2048))


class JwtSigner:
    def __init__(
        self, secrets: Sequence[str], *, alg: str = "ES256", issuer: str, default_audience: str | None
    ) -> None:
        if not secrets:
            raise ValueError("upstream JWTs need at least one secret (secrets.default or secrets.cookie)")
        if alg == "RS256":
            log.warning("RS256 upstream JWT keys are per process; prefer ES256 or EdDSA with several workers")
        self.alg = alg
        self.issuer = issuer
        self.default_audience = default_audience
        self.keys = [_derive(s, alg) for s in secrets]
        for key in self.keys:
            key.ensure_kid()
        self.kid = self.keys[0].kid
        self._header = {"alg": alg, "kid": self.kid, "typ": "JWT"}
        public = KeySet([k for k in self.keys]).as_dict(private=False)
        for entry in public["keys"]:
            entry.update({"use": "sig", "alg": alg})
        self.jwks_body = json.dumps(public, separators=(",", ":")).encode()
        # Tokens are reused for half their lifetime: signing is ~40 µs, a dict lookup is not.
        self._cache: dict[tuple[str, str | None, int], tuple[float, str]] = {}

    def sign(
        self, claims: dict[str, Any], *, audience: str | None, ttl: float, cache_key: str | None = None
    ) -> str:
        now = time.time()
        key = (cache_key, audience, int(ttl)) if cache_key is not None else None
        if key is not None:
            hit = self._cache.get(key)
            if hit is not None and hit[0] > now:
                return hit[1]
        aud = audience or self.default_audience
        payload = {
            **claims,
            "iss": self.issuer,
            "iat": int(now),
            "nbf": int(now),
            "exp": int(now + ttl),
            "jti": uuid.uuid4().hex,
        }
        if aud:
            payload["aud"] = aud
        token = jwt.encode(self._header, payload, self.keys[0])
        if key is not None:
            if len(self._cache) > 10000:
                self._cache.clear()
            self._cache[key] = (now + ttl / 2, token)
        return token

"""Sessions as signed JWTs (Kratos ``session/tokenizer.go``): ``GET /sessions/whoami?tokenize_as=``.

Each ``session.whoami.tokenizer.templates.<name>`` names a private JSON Web Key Set (its first key
signs, with the key's own ``alg`` and ``kid``), a lifetime and an optional Jsonnet claims mapper.
The claims are Kratos': ``jti``, ``iss`` (the public base URL), ``exp``, ``sid``, ``nbf``, ``iat``
and ``sub`` (identity id or ``external_id``); the mapper reads ``std.extVar('session')`` (the
whoami JSON) and ``std.extVar('claims')`` and returns ``{claims: {...}}``, merged over them, after
which ``sub`` is set again so a mapper can never change whom the token is about. Keys and mappers
are read at start, so a broken template fails the start, not a request.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from sidecar import errors
from sidecar.config.model import TokenizerTemplate
from sidecar.security import jsonnet
from sidecar.security.jsonnet import load_source

SIGNING_ALGS = frozenset(
    {"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA"}
)


@dataclass(frozen=True, slots=True)
class _Template:
    key: Any
    header: dict[str, str]
    ttl: float
    mapper: str | None
    subject_source: str


def _load_key(url: str, key_path: str) -> tuple[Any, dict[str, str]]:
    try:
        data = json.loads(load_source(url, key_path))
        keys = KeySet.import_key_set(data)
    except (ValueError, JoseError, TypeError) as exc:
        raise ValueError(f"{key_path}: not a JSON Web Key Set: {exc}") from None
    if not keys.keys:
        raise ValueError(f"{key_path}: the key set is empty")
    key = keys.keys[0]
    alg = key.get("alg") if hasattr(key, "get") else None
    if alg not in SIGNING_ALGS:
        raise ValueError(
            f'{key_path}: the JSON Web Key must include a valid "alg" parameter but "{alg}" was given'
        )
    if not key.is_private:
        raise ValueError(f"{key_path}: the first key must be a private key (it signs)")
    header = {"alg": str(alg), "typ": "JWT"}
    if key.kid:
        header["kid"] = key.kid
    return key, header


# Kratos gives the tokenizer's Jsonnet no deadline of its own; a sandboxed run gets this one.
MAPPER_TIMEOUT = 5.0


class SessionTokenizer:
    def __init__(
        self,
        templates: Mapping[str, TokenizerTemplate],
        *,
        issuer: str,
        mapper_timeout: float = MAPPER_TIMEOUT,
        sandbox: jsonnet.JsonnetSandbox | None = None,
    ) -> None:
        # None: checked at load only (preflight); a mapper then runs in a one-shot process.
        self._evaluate = sandbox.evaluate if sandbox is not None else jsonnet.evaluate
        self._issuer = issuer
        self._timeout = mapper_timeout
        self._templates: dict[str, _Template] = {}
        for name, tpl in templates.items():
            where = f"session.whoami.tokenizer.templates.{name}"
            key, header = _load_key(tpl.jwks_url, f"{where}.jwks_url")
            mapper = (
                load_source(tpl.claims_mapper_url, f"{where}.claims_mapper_url")
                if tpl.claims_mapper_url
                else None
            )
            self._templates[name] = _Template(
                key, header, tpl.ttl.total_seconds(), mapper, tpl.subject_source
            )

    async def tokenize(self, name: str, session_json: Mapping[str, Any]) -> str:
        tpl = self._templates.get(name)
        if tpl is None:
            raise errors.BadRequest(reason=f'Unable to find tokenizer template "{name}".')
        now = int(time.time())
        claims: dict[str, Any] = {
            "jti": str(uuid.uuid4()),
            "iss": self._issuer,
            "exp": now + int(tpl.ttl),
            "sid": session_json["id"],
            "nbf": now,
            "iat": now,
        }
        subject = _subject(session_json, tpl.subject_source)
        claims["sub"] = subject
        if tpl.mapper is not None:
            try:
                out = await self._evaluate(
                    tpl.mapper,
                    ext={"session": session_json, "claims": claims},
                    timeout=self._timeout,
                    name="tokenizer.jsonnet",
                )
            except jsonnet.JsonnetError as exc:
                raise errors.BadRequest(
                    reason="Unable to execute tokenizer JsonNet.", details={"debug": str(exc)}
                ) from None
            mapped = out.get("claims") if isinstance(out, Mapping) else None
            if not isinstance(mapped, Mapping):
                raise errors.BadRequest(
                    reason="Expected tokenizer JsonNet to return a claims object but it did not."
                )
            claims.update(mapped)
            claims["sub"] = subject
        return jwt.encode(tpl.header, claims, tpl.key, algorithms=[tpl.header["alg"]])


def _subject(session_json: Mapping[str, Any], source: str) -> str:
    identity = session_json.get("identity") or {}
    if source == "external_id":
        external = identity.get("external_id")
        if not external:
            raise errors.BadRequest(
                reason="The session's identity does not have an external ID set, but it is required "
                "for the subject claim."
            )
        return str(external)
    return str(identity.get("id") or session_json.get("identity_id"))

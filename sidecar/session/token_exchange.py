"""Native social sign-in's session-token exchange (Kratos ``selfservice/sessiontokenexchange``,
``persistence/sql/persister_sessiontokenexchanger.go``, ``session/handler.go`` ``exchangeCode``).

An app creates an API login or registration flow with ``return_session_token_exchange_code=true``
and gets an ``init_code``; the sign-in at the provider happens in a browser, which comes back to
the flow's ``return_to`` with ``?code=<return_to_code>``; the app sends both codes to
``GET /sessions/token-exchange`` and gets the session and its token.

Both codes are Kratos' 64 alphanumeric characters. Unlike Kratos' table, which keeps the codes in
clear and answers for as long as the row lives, the codes are kept as digests, the session token
is kept encrypted with a key derived from both codes (neither is stored once the session exists),
and the exchange answers once: ``take`` is atomic, so of two concurrent exchanges one gets it.
Everything expires with the key-value store's TTL.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import string
import uuid
from dataclasses import dataclass
from datetime import timedelta

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sidecar.kv.store import KeyValueStore
from sidecar.security import tokens

FLOW_MARK = "session_token_exchange"
"""``flow.internal`` key of a flow created with an exchange code: a social sign-in may then leave
for the provider from an API flow (Kratos' ``CodeForFlow`` check)."""

_ALPHABET = string.ascii_letters + string.digits
_NONCE = 12


def _code() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(64))


def _derive(label: str, init_digest: str, return_to_code: str) -> bytes:
    return hashlib.sha256(f"{label}\x00{init_digest}\x00{return_to_code}".encode()).digest()


@dataclass(frozen=True, slots=True)
class Exchanged:
    session_id: uuid.UUID
    token: str


class TokenExchanges:
    def __init__(self, kv: KeyValueStore, ttl: timedelta) -> None:
        self._kv = kv
        self._ttl = ttl

    @staticmethod
    def _flow_key(flow_id: uuid.UUID) -> str:
        return f"token_exchange:flow:{flow_id}"

    async def create(self, flow_id: uuid.UUID) -> str:
        """A new exchange for ``flow_id``; returns the ``init_code`` (shown once, to the app)."""
        init_code = _code()
        record = {"init": tokens.digest(init_code), "return_to_code": _code()}
        await self._kv.set(self._flow_key(flow_id), json.dumps(record).encode(), self._ttl)
        return init_code

    async def has(self, flow_id: uuid.UUID) -> bool:
        return await self._kv.get(self._flow_key(flow_id)) is not None

    async def move(self, old: uuid.UUID, new: uuid.UUID) -> None:
        """Kratos' ``MoveToNewFlow``: a login that became a registration (or back) keeps the codes."""
        raw = await self._kv.take(self._flow_key(old))
        if raw is not None:
            await self._kv.set(self._flow_key(new), raw, self._ttl)

    async def attach(self, flow_id: uuid.UUID, session_id: uuid.UUID, token: str) -> str | None:
        """The flow's sign-in finished with this session: make it exchangeable, once. Returns the
        ``return_to_code`` for the browser's redirect, None when the flow has no exchange."""
        raw = await self._kv.take(self._flow_key(flow_id))
        if raw is None:
            return None
        record = json.loads(raw)
        init_digest, return_to_code = str(record["init"]), str(record["return_to_code"])
        nonce = os.urandom(_NONCE)
        sealed = AESGCM(_derive("key", init_digest, return_to_code)).encrypt(
            nonce, json.dumps({"session_id": str(session_id), "token": token}).encode(), None
        )
        key = self._ready_key(init_digest, return_to_code)
        await self._kv.set(key, nonce + sealed, self._ttl)
        return return_to_code

    def _ready_key(self, init_digest: str, return_to_code: str) -> str:
        return f"token_exchange:ready:{_derive('id', init_digest, return_to_code).hex()}"

    async def exchange(self, init_code: str, return_to_code: str) -> Exchanged | None:
        """The session of a finished sign-in for these two codes, once; None otherwise (unknown,
        not finished yet, expired or already exchanged)."""
        if len(init_code) > 128 or len(return_to_code) > 128:
            return None
        init_digest = tokens.digest(init_code)
        raw = await self._kv.take(self._ready_key(init_digest, return_to_code))
        if raw is None:
            return None
        try:
            plain = AESGCM(_derive("key", init_digest, return_to_code)).decrypt(
                raw[:_NONCE], raw[_NONCE:], None
            )
            data = json.loads(plain)
            return Exchanged(uuid.UUID(data["session_id"]), str(data["token"]))
        except (InvalidTag, ValueError, KeyError):
            return None

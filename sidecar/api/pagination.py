"""Keyset pagination with sealed page tokens and Kratos' ``Link`` header.

A page token is the last id of the previous page, signed (itsdangerous) so a client cannot
forge or tamper with one: a forged token is a 400, never a scan from an arbitrary position.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import TypeVar
from urllib.parse import urlencode

from itsdangerous import BadSignature, URLSafeSerializer

from sidecar import errors
from sidecar.config.model import Config

S = TypeVar("S", bound=str)


def pagination_secret(config: Config) -> str:
    s = config.secrets
    return (s.pagination or s.default or s.cookie)[0]


class PageTokens:
    def __init__(self, secrets: list[str], salt: str) -> None:
        if not secrets:
            raise ValueError("page tokens need at least one secret")
        # The first secret signs; all verify, so rotating secrets keeps old tokens valid for a while.
        self._serializer = URLSafeSerializer(list(reversed(secrets)), salt=salt)

    @classmethod
    def from_config(cls, config: Config, salt: str) -> PageTokens:
        s = config.secrets
        return cls(s.pagination or s.default or s.cookie, salt)

    def seal(self, after: uuid.UUID) -> str:
        return str(self._serializer.dumps(after.hex))

    def open(self, token: str) -> uuid.UUID:
        try:
            value = self._serializer.loads(token)
            return uuid.UUID(hex=str(value))
        except (BadSignature, ValueError, TypeError):
            raise errors.BadRequest(
                "The page token is invalid, do not craft your own page tokens",
                reason="invalid page_token",
            ) from None


def parse_page_size(raw: str | None, *, default: int, maximum: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        size = int(raw)
    except ValueError:
        raise errors.BadRequest(f"page_size must be an integer, got {raw!r}") from None
    if size < 1:
        raise errors.BadRequest("page_size must be at least 1")
    return min(size, maximum)


def link_header(path: str, params: Mapping[str, str], page_size: int, next_token: str | None) -> str:
    base = {**params, "page_size": str(page_size)}
    links = [f'<{path}?{urlencode(base)}>; rel="first"']
    if next_token:
        links.append(f'<{path}?{urlencode({**base, "page_token": next_token})}>; rel="next"')
    return ",".join(links)


def parse_status(raw: str | None, statuses: Sequence[S]) -> S | None:
    """A list's ``status`` filter: none, or one of ``statuses`` (anything else is a 400)."""
    if not raw:
        return None
    for status in statuses:
        if status == raw:
            return status
    raise errors.BadRequest(
        f"status must be one of {', '.join(statuses)}, got {raw[:32]!r}", reason="invalid status filter"
    )


def parse_uuid(raw: str, what: str = "id") -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise errors.BadRequest(f"{what} must be a UUID, got {raw[:64]!r}") from None

"""Breached passwords through the Have I Been Pwned range API, by k-anonymity (Kratos
``selfservice/strategy/password/validator.go``).

Only the first five hex digits of the password's SHA-1 leave the machine
(``GET https://<host>/range/<PREFIX>``); the answer lists every known suffix with its breach count
(``SUFFIX:COUNT`` per line; a line without ``:COUNT`` counts once, as Kratos reads it). Answers are
cached per full hash for an hour, like Kratos' ristretto cache, so a retyped password costs nothing.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict

import httpx

from sidecar import errors
from sidecar.config.model import PasswordMethodConfig
from sidecar.security.passwords import PolicyViolation

TOO_MANY_BREACHES = 4000034
CACHE_TTL = 3600.0
CACHE_SIZE = 100_000


class BreachUnavailable(errors.BadGateway):
    """Kratos' ``ErrNetworkFailure`` / ``ErrUnexpectedStatusCode`` (herodot's upstream error)."""

    default_message = "Leaked password server unavailable"
    reason = "Unable to check if password has been leaked because an unexpected network error occurred"


def range_base_url(host: str) -> str:
    """``https://<host>`` as Kratos builds it; a value with a scheme is taken as the base URL."""
    host = host.rstrip("/")
    return host if "://" in host else f"https://{host}"


class BreachCheck:
    """``haveibeenpwned_enabled``: how often a password was breached, against ``max_breaches``."""

    def __init__(self, config: PasswordMethodConfig, client: httpx.AsyncClient) -> None:
        self._base = range_base_url(config.haveibeenpwned_host)
        self._max = config.max_breaches
        self._ignore_errors = config.ignore_network_errors
        self._client = client
        self._cache: OrderedDict[str, tuple[float, int]] = OrderedDict()

    async def violation(self, password: str) -> PolicyViolation | None:
        """The 4000034 message when the password was breached more than ``max_breaches`` times;
        None when it was not, or when the API failed and ``ignore_network_errors`` is on."""
        digest = hashlib.sha1(password.encode(), usedforsecurity=False).hexdigest().upper()
        count = self._cached(digest)
        if count is None:
            try:
                count = await self._fetch(digest)
            except BreachUnavailable:
                if self._ignore_errors:
                    return None
                raise
        if count <= self._max:
            return None
        return PolicyViolation(
            TOO_MANY_BREACHES,
            "The password has been found in data breaches and must no longer be used.",
            {"breaches": count},
        )

    def _cached(self, digest: str) -> int | None:
        hit = self._cache.get(digest)
        if hit is None or hit[0] < time.monotonic():
            return None
        return hit[1]

    def _remember(self, digest: str, count: int) -> None:
        self._cache[digest] = (time.monotonic() + CACHE_TTL, count)
        self._cache.move_to_end(digest)
        while len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)

    async def _fetch(self, digest: str) -> int:
        prefix = digest[:5]
        try:
            response = await self._client.get(f"{self._base}/range/{prefix}")
        except httpx.HTTPError as exc:
            raise BreachUnavailable(details={"cause": type(exc).__name__}) from None
        if response.status_code != 200:
            raise BreachUnavailable(
                reason="Unexpected status code from haveibeenpwned.com",
                details={"status_code": response.status_code},
            )
        found = 0
        for row in response.text.splitlines():
            suffix, _, raw = row.strip().partition(":")
            try:
                count = int(raw.replace(",", "")) if raw else 1
            except ValueError:
                raise BreachUnavailable(
                    reason=f"Expected password hash to contain a count formatted as int but got: {raw[:40]}"
                ) from None
            if prefix + suffix.upper() == digest:
                found = count
        self._remember(digest, found)
        return found

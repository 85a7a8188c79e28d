"""Brute-force protection for credential checks that cannot be turned against the users it protects.

After Keycloak's brute-force detector and OWASP's Authentication Cheat Sheet: throttle, never lock.
Only failures count, a success clears the identifier's failures, and past a few failures the
answer is a growing delay (429 with ``Retry-After``), not a lockout. Three counters, each with its
own threshold in ``security.rate_limit``:

- **(identifier, client IP)**, ``free_failures`` (5): the guesser's own counter. Past it, each
  attempt must wait ``initial_delay`` doubled per further failure, up to ``max_delay``. Keyed by
  the IP too, so guesses from one network do not slow the owner signing in from another.
- **identifier**, across all IPs, ``per_identifier`` (100, NIST SP 800-63B §5.2.2): the looser cap
  against a guesser spread over many addresses. Past it, the same growing delay applies to every
  attempt on that identifier, from anywhere (the price of stopping a botnet; the owner is slowed,
  never locked out, and their success clears it).
- **client IP**, across identifiers, ``per_ip`` (100): credential stuffing, many identifiers from
  one address. Not cleared by a success (one good account must not reset a stuffing run).

How the delay works: a "gate" key whose TTL is the delay. While it exists, attempts on that
counter are answered 429 at once, without checking the password (and without counting). Once
the threshold is reached, an attempt may go on only by creating the gate for the next one
(``add``: atomic, so of concurrent attempts exactly one passes). The (identifier, IP) counter
counts each attempt as it is admitted and a success deletes it, so a burst of parallel guesses
gets at most ``free_failures`` through before the gate closes; the two wider counters count
verified failures only, so requests an attacker's own gate refused never add to the owner's
counter. Counters are forgotten ``failure_window`` after their first failure (Keycloak's
"failure reset time"). IPv6 clients are counted per /64, the block one subscriber gets.
Identifiers are stored as digests of their canonical form, never in clear.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import math
from dataclasses import dataclass
from datetime import timedelta

from sidecar.config.model import RateLimit
from sidecar.errors import ServiceUnavailable
from sidecar.kv.store import KeyValueStore
from sidecar.security.identifiers import normalize_identifier


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    retry_after: int = 0
    """Seconds until an attempt may be made again (0 when allowed)."""


ALLOWED = Verdict(True)


def _digest(identifier: str) -> str:
    canonical = normalize_identifier(identifier.strip())
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def ip_bucket(ip: str) -> str:
    """The address counted for ``ip``: itself for IPv4, its /64 for IPv6."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _seconds(delta: timedelta) -> int:
    return max(1, math.ceil(delta.total_seconds()))


class Throttle:
    """``security.rate_limit`` for one store: ``admit`` before a check, then ``failed`` or
    ``succeeded`` after it. ``scope`` separates what is guessed (login, totp, ...)."""

    def __init__(self, kv: KeyValueStore, config: RateLimit) -> None:
        self._kv = kv
        self._config = config

    def delay(self, excess: int) -> timedelta:
        """The wait after ``excess`` failures past a threshold: doubling, capped."""
        config = self._config
        if excess >= 64:  # 2**64 seconds: long past any cap
            return config.max_delay
        wait: timedelta = min(config.initial_delay * (2**excess), config.max_delay)
        return wait

    def _keys(self, scope: str, identifier: str | None, ip: str | None) -> list[tuple[str, int, bool]]:
        """(counter key, threshold, counted on admission) for each counter that applies."""
        keys: list[tuple[str, int, bool]] = []
        bucket = ip_bucket(ip) if ip else ""
        if identifier:
            digest = _digest(identifier)
            keys.append((f"bf:{scope}:pair:{digest}:{bucket}", self._config.free_failures, True))
            keys.append((f"bf:{scope}:id:{digest}", self._config.per_identifier, False))
        if bucket:
            keys.append((f"bf:{scope}:ip:{bucket}", self._config.per_ip, False))
        return keys

    async def _closed(self, counter: str) -> int:
        left = await self._kv.ttl(counter + ":gate")
        return _seconds(left) if left is not None and left > timedelta(0) else 0

    async def _read(self, counter: str) -> int:
        raw = await self._kv.get(counter)
        return int(raw) if raw and raw.isdigit() else 0

    async def admit(self, scope: str, *, identifier: str | None, ip: str | None) -> Verdict:
        """May this attempt be checked now? Call before verifying the credential.

        Reads first (a gate can only be closed on a counter at its threshold), so the common
        attempt costs three reads and one increment; an attempt refused by a closed gate changes
        nothing.
        """
        if not self._config.enabled:
            return ALLOWED
        keys = self._keys(scope, identifier, ip)
        attempts = [await self._read(counter) + 1 for counter, _, _ in keys]
        waits = [
            await self._closed(counter)
            for (counter, threshold, _), attempt in zip(keys, attempts, strict=True)
            if attempt >= threshold
        ]
        if any(waits):
            return Verdict(False, max(waits))
        for (counter, threshold, on_admission), attempt in zip(keys, attempts, strict=True):
            if on_admission:
                # Counted now, so parallel attempts see each other (a success deletes it).
                attempt = await self._kv.incr(counter, self._config.failure_window)
            if attempt < threshold:
                continue
            wait = self.delay(attempt - threshold)
            if not await self._kv.add(counter + ":gate", b"1", wait):
                # Another attempt took the slot first; it set the wait we now report.
                return Verdict(False, (await self._closed(counter)) or _seconds(wait))
        return ALLOWED

    async def failed(self, scope: str, *, identifier: str | None, ip: str | None) -> None:
        """The credential was wrong: count it on the wider counters (the pair counted on admission)."""
        if not self._config.enabled:
            return
        for counter, _, on_admission in self._keys(scope, identifier, ip):
            if not on_admission:
                await self._kv.incr(counter, self._config.failure_window)

    async def abandoned(self, scope: str, *, identifier: str | None, ip: str | None) -> None:
        """The credential could not be checked (a store was down): take back what ``admit``
        counted, so an outage never pushes a user toward the throttle. Best effort: with the
        store still down this fails too, and the count expires with its window."""
        if not self._config.enabled:
            return
        for counter, _, on_admission in self._keys(scope, identifier, ip):
            if on_admission:
                with contextlib.suppress(ServiceUnavailable):
                    await self._kv.incr(counter, self._config.failure_window, by=-1)

    async def succeeded(self, scope: str, *, identifier: str | None, ip: str | None) -> None:
        """The credential was right: this IP's and the identifier-wide failures are forgotten (a
        guesser's own (identifier, IP) counter elsewhere stays)."""
        if not self._config.enabled or not identifier:
            return
        for counter, threshold, on_admission in self._keys(scope, identifier, ip):
            if ":ip:" in counter:
                continue
            # Deletes are writes: the identifier-wide keys usually do not exist, so look first.
            count = await self._read(counter)
            if on_admission or count:
                await self._kv.delete(counter)
            if count >= threshold:  # below it, no gate was ever set
                await self._kv.delete(counter + ":gate")

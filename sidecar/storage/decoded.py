"""What a store made of the bytes it read, remembered by those bytes: decoding without its cost when
the same record is read again.

A session-cache miss reads the session and its identity afresh and, until now, decoded both afresh:
JSON, UUIDs, timestamps and the model values made of them were about 170k of its 378k
instructions (callgrind, issue 15). Most misses read a record decoded before: the cache entry of
a signed-in user ran out (``session.cache_ttl``), another request of the same session
(``cache_ttl: 0s``), a worker that loaded it a moment ago. The value made of a record is a pure
function of the record as read, so a record read again with the very same bytes is the same
value. Nothing here answers for a store: every lookup is a real read, and a record that changed
in any byte (a session revoked or extended, an identity deactivated, a trait or an address
changed) is another key, decoded again. What depends on the clock (a session's expiry) is
checked on every read by the caller, never remembered.

Values are shared between the reads that find them, as the session cache shares its entries:
they are frozen, and nobody changes their mappings. Callers keep no secret here (the identity
store remembers no row that carries credentials). Bounded: past ``size`` the oldest key goes.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

V = TypeVar("V")

SIZE = 4096
"""Records remembered per reader: the sessions (and identities) of a few thousand users."""


class Decoded(Generic[V]):
    """A bounded map from a record as read (bytes, or a row's tuple of plain values) to the value
    decoded from it. First in, first out: a hit costs a hash of the key and a lookup, no reorder."""

    __slots__ = ("_size", "_values", "get")

    def __init__(self, size: int = SIZE) -> None:
        self._size = max(size, 1)
        self._values: dict[Hashable, V] = {}
        self.get = self._values.get
        """The value decoded from ``key`` before, or None."""

    def put(self, key: Hashable, value: V) -> V:
        values = self._values
        if len(values) >= self._size:
            del values[next(iter(values))]
        values[key] = value
        return value

    def __len__(self) -> int:
        return len(self._values)

"""The identity store as recovery and verification see it, with verification observed.

A verified address is visible to the app (whoami's ``verifiable_addresses``, the proxy's
``verified`` for rules and headers), so marking one verified tells the ``IdentityObserver`` like
every other change to a stored identity; the session caches then drop that identity's entries.
"""

from __future__ import annotations

import uuid

from sidecar.identity.manager import IdentityObserver
from sidecar.identity.model import Identity
from sidecar.identity.store import IdentityStore


class ObservedAddresses:
    """``sidecar.strategies.address_challenge.AddressDirectory`` over an ``IdentityStore``."""

    def __init__(self, store: IdentityStore, observer: IdentityObserver) -> None:
        self._store = store
        self._observer = observer

    async def get(self, identity_id: uuid.UUID) -> Identity | None:
        return await self._store.get(identity_id)

    async def find_verifiable_address(self, via: str, value: str) -> tuple[Identity, uuid.UUID] | None:
        return await self._store.find_verifiable_address(via, value)

    async def find_recovery_address(self, via: str, value: str) -> tuple[Identity, uuid.UUID] | None:
        return await self._store.find_recovery_address(via, value)

    async def mark_address_verified(self, address_id: uuid.UUID) -> None:
        owner = await self._store.mark_address_verified(address_id)
        if owner is not None:
            await self._observer.identity_changed(owner)

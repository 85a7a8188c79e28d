"""What the courier worker needs from a delivery channel (``sidecar.courier.smtp`` for email)."""

from __future__ import annotations

from typing import Protocol

from sidecar.courier.model import Message


class PermanentDeliveryError(Exception):
    """A failure that retrying cannot fix (5xx reply, invalid message): the message is abandoned."""


class Sender(Protocol):
    async def send(self, message: Message) -> None:
        """Deliver ``message`` or raise: ``PermanentDeliveryError`` or any other (retried) error."""
        ...

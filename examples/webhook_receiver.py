"""Checking a sidecar web hook delivery on the receiving side (fire-and-forget hooks, the outbox)."""

import hashlib
import hmac
import time


def verify_signature(secret: str, headers: dict[str, str], body: bytes, tolerance: int = 300) -> bool:
    """True when ``Webhook-Signature`` was made with ``secret`` over this body, recently.

    ``headers`` keys are lower case. Deduplicate on ``Idempotency-Key``: a retry carries the same
    key, and delivery is at least once.
    """
    fields = dict(part.split("=", 1) for part in headers["webhook-signature"].split(","))
    timestamp, signature = int(fields["t"]), fields["v1"]
    if abs(time.time() - timestamp) > tolerance:
        return False  # a replayed old delivery
    message = f"{timestamp}.{headers['idempotency-key']}.".encode() + body
    expected = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, signature)

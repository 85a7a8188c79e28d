"""Identities that sign in with keys, for the ``webauthn`` and ``passkey`` strategies: whether one
would keep a way in without a key, and creating one together with its first key."""

from __future__ import annotations

from typing import Any

from sidecar import errors
from sidecar.flows import messages
from sidecar.flows.outcome import FlowInvalid
from sidecar.identity.manager import IdentitySpec
from sidecar.identity.model import Identity
from sidecar.strategies import webauthn_keys as wk
from sidecar.strategies.traits import traits_refused


def other_first_factor(identity: Identity, kind: str, key_id: bytes) -> bool:
    """Would ``identity`` still have a way to sign in without the key ``key_id`` of ``kind``?"""
    for other, credential in identity.credentials.items():
        if other in ("password", "oidc", "saml") and (credential.identifiers or credential.config):
            return True
        if other in ("webauthn", "passkey"):
            keys = wk.stored_keys(credential)
            usable = [k for k in keys if other == "passkey" or k.is_passwordless]
            if any(not (other == kind and k.id == key_id) for k in usable):
                return True
    return False


async def create_with_credential(
    identities: wk.KeyIdentities,
    traits: dict[str, Any],
    schema_id: str,
    credential: Any,
    kept: dict[str, Any],
) -> Identity:
    """A new identity holding ``credential``; a duplicate (trait or key id) is one message, and an
    identity whose key could not be stored is removed again."""
    try:
        identity = await identities.create(IdentitySpec(traits=traits, schema_id=schema_id))
    except (errors.Conflict, errors.ValidationError) as exc:
        raise traits_refused(exc, kept) from None
    try:
        return await identities.save_credential(identity.id, credential)
    except errors.Conflict:
        await identities.delete(identity.id)
        raise FlowInvalid([messages.duplicate_credentials()], values=kept) from None
    except Exception:
        await identities.delete(identity.id)  # all or nothing (flows/registration.py)
        raise

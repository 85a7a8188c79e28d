"""Claims → identity through the provider's Jsonnet mapper (Kratos' ``mapper_url``).

A mapper reads ``std.extVar('claims')`` and returns ``{identity: {traits, metadata_public,
metadata_admin, verified_addresses}}``. It runs on the server's one Jsonnet sandbox
(``security/jsonnet.py``, handed down from ``app.build_services``): a warm worker process with a
CPU deadline, a memory cap and an output cap, imports refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sidecar.security import jsonnet
from sidecar.security.jsonnet import load_source

DEFAULT_MAPPER = """
local claims = std.extVar('claims');
{
  identity: {
    traits: { [if 'email' in claims then 'email' else null]: claims.email },
  },
}
"""


class MapperError(Exception):
    """The mapper failed, looped, or returned something that is not an identity."""


@dataclass(frozen=True, slots=True)
class MappedIdentity:
    traits: dict[str, Any]
    metadata_public: Any = None
    metadata_admin: Any = None
    verified_addresses: tuple[tuple[str, str], ...] = field(default_factory=tuple)
    """(via, value) pairs the mapper vouches for (Kratos ``identity.verified_addresses``)."""


def load_mapper(url: str | None) -> str:
    """The Jsonnet source behind ``mapper_url`` (``file://``, ``base64://``); the default maps
    ``email`` alone."""
    if not url:
        return DEFAULT_MAPPER
    return load_source(url, "mapper_url")


def _parse(output: Any) -> MappedIdentity:
    identity = output.get("identity") if isinstance(output, Mapping) else None
    if not isinstance(identity, Mapping):
        raise MapperError("the mapper must return an object with an 'identity' key")
    traits = identity.get("traits")
    if not isinstance(traits, Mapping):
        raise MapperError("the mapper must return identity.traits as an object")
    verified: list[tuple[str, str]] = []
    for item in identity.get("verified_addresses") or []:
        if isinstance(item, Mapping) and isinstance(item.get("value"), str):
            verified.append((str(item.get("via") or "email"), item["value"]))
    return MappedIdentity(
        traits=dict(traits),
        metadata_public=identity.get("metadata_public"),
        metadata_admin=identity.get("metadata_admin"),
        verified_addresses=tuple(verified),
    )


async def run_mapper(
    sandbox: jsonnet.JsonnetSandbox, source: str, claims: Mapping[str, Any], *, timeout: float
) -> MappedIdentity:
    """``claims`` through the mapper ``source`` as Kratos passes them (``std.extVar('claims')``)."""
    try:
        output = await sandbox.evaluate(
            source, ext={"claims": claims}, timeout=timeout, name="mapper.jsonnet"
        )
    except jsonnet.JsonnetError as exc:
        raise MapperError(f"the claims mapper {exc}") from None
    return _parse(output)

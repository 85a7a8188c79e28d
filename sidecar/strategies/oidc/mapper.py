"""Claims → identity through the provider's Jsonnet mapper (Kratos' ``mapper_url``).

A mapper reads ``std.extVar('claims')`` and returns ``{identity: {traits, metadata_public,
metadata_admin, verified_addresses}}``. It runs in a child process with a deadline, a memory cap
and an output cap: a looping or exploding mapper costs one short-lived process, never a worker.
Imports are refused (a mapper is one self-contained file).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

MAX_OUTPUT = 1024 * 1024
MEMORY_LIMIT = 512 * 1024 * 1024

DEFAULT_MAPPER = """
local claims = std.extVar('claims');
{
  identity: {
    traits: { [if 'email' in claims then 'email' else null]: claims.email },
  },
}
"""

# The child: caps its own memory, evaluates, answers one JSON line. Kept tiny: it runs per sign-in.
_RUNNER = r"""
import json, resource, sys
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
import _jsonnet
def refuse(base, rel):
    raise RuntimeError("imports are not allowed in claims mappers")
job = json.loads(sys.stdin.read())
try:
    out = _jsonnet.evaluate_snippet(
        "mapper.jsonnet", job["snippet"], ext_codes={"claims": job["claims"]},
        import_callback=refuse, max_stack=200,
    )
except (RuntimeError, MemoryError) as exc:
    sys.stdout.write(json.dumps({"error": str(exc)[:1000]}))
else:
    sys.stdout.write(json.dumps({"result": out}))
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
    if url.startswith("base64://"):
        data = url[len("base64://") :]
        try:
            return base64.b64decode(
                data + "=" * (-len(data) % 4), altchars=b"-_" if "-" in data or "_" in data else None
            ).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise ValueError(f"mapper_url: invalid base64: {exc}") from None
    parts = urlsplit(url)
    if parts.scheme == "file":
        path = Path(unquote(parts.netloc + parts.path))
    elif parts.scheme == "":
        path = Path(url)
    else:
        raise ValueError(f"mapper_url: unsupported scheme {parts.scheme!r} (use file:// or base64://)")
    try:
        return path.read_text()
    except OSError as exc:
        raise ValueError(f"mapper_url: cannot read {path}: {exc.strerror}") from None


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


async def run_mapper(source: str, claims: Mapping[str, Any], *, timeout: float) -> MappedIdentity:
    job = json.dumps({"snippet": source, "claims": json.dumps(claims, default=str)}).encode()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-I",
        "-c",
        _RUNNER,
        str(MEMORY_LIMIT),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(job), timeout)
    except TimeoutError:
        raise MapperError(f"the claims mapper did not finish within {timeout:g}s") from None
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    if len(out) > MAX_OUTPUT:
        raise MapperError("the claims mapper returned too much data")
    try:
        answer = json.loads(out)
    except ValueError:
        raise MapperError(f"the claims mapper crashed (exit status {proc.returncode})") from None
    if "error" in answer:
        raise MapperError(f"the claims mapper failed: {answer['error']}")
    try:
        return _parse(json.loads(answer["result"]))
    except (KeyError, ValueError):
        raise MapperError("the claims mapper returned invalid JSON") from None

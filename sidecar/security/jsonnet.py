"""The Jsonnet sandbox shared by the OIDC claims mappers, the session tokenizer and web hook
bodies (Kratos runs all three through ``jsonnetsecure``).

A snippet runs in a child process with a deadline, a memory cap and an output cap: a looping or
exploding snippet costs one short-lived process, never a worker. Imports are refused (a snippet is
one self-contained file). Sources come from ``file://``, ``base64://`` or a plain path.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

MAX_OUTPUT = 1024 * 1024
MEMORY_LIMIT = 512 * 1024 * 1024

# The child: caps its own memory, evaluates, answers one JSON line. Kept tiny: it runs per call.
_RUNNER = r"""
import json, resource, sys
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
import _jsonnet
def refuse(base, rel):
    raise RuntimeError("imports are not allowed in Jsonnet snippets")
job = json.loads(sys.stdin.read())
try:
    out = _jsonnet.evaluate_snippet(
        job["name"], job["snippet"], ext_codes=job["ext_codes"], tla_codes=job["tla_codes"],
        import_callback=refuse, max_stack=200,
    )
except (RuntimeError, MemoryError) as exc:
    sys.stdout.write(json.dumps({"error": str(exc)[:1000]}))
else:
    sys.stdout.write(json.dumps({"result": out}))
"""


class JsonnetError(Exception):
    """The snippet failed, looped, ran out of memory or returned something that is not JSON."""


def load_source(url: str, key: str) -> str:
    """The Jsonnet behind ``url`` (``file://``, ``base64://``, or a path); ``key`` names the config
    key in errors."""
    if url.startswith("base64://"):
        data = url[len("base64://") :]
        try:
            return base64.b64decode(
                data + "=" * (-len(data) % 4), altchars=b"-_" if "-" in data or "_" in data else None
            ).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise ValueError(f"{key}: invalid base64: {exc}") from None
    parts = urlsplit(url)
    if parts.scheme == "file":
        path = Path(unquote(parts.netloc + parts.path))
    elif parts.scheme == "":
        path = Path(url)
    else:
        raise ValueError(f"{key}: unsupported scheme {parts.scheme!r} (use file:// or base64://)")
    try:
        return path.read_text()
    except OSError as exc:
        raise ValueError(f"{key}: cannot read {path}: {exc.strerror}") from None


async def evaluate(
    source: str,
    *,
    ext: Mapping[str, Any] | None = None,
    tla: Mapping[str, Any] | None = None,
    timeout: float,
    name: str = "snippet.jsonnet",
) -> Any:
    """Evaluate ``source`` with ``ext`` as ``std.extVar`` and ``tla`` as top-level arguments (both
    JSON values); the result, parsed."""
    job = json.dumps(
        {
            "name": name,
            "snippet": source,
            "ext_codes": {k: json.dumps(v, default=str) for k, v in (ext or {}).items()},
            "tla_codes": {k: json.dumps(v, default=str) for k, v in (tla or {}).items()},
        }
    ).encode()
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
        raise JsonnetError(f"did not finish within {timeout:g}s") from None
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    if len(out) > MAX_OUTPUT:
        raise JsonnetError("returned too much data")
    try:
        answer = json.loads(out)
    except ValueError:
        raise JsonnetError(f"crashed (exit status {proc.returncode})") from None
    if "error" in answer:
        raise JsonnetError(f"failed: {answer['error']}")
    try:
        return json.loads(answer["result"])
    except (KeyError, ValueError):
        raise JsonnetError("returned invalid JSON") from None

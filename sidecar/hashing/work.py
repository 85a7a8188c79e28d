"""The hashing work itself, the same in a hashing thread and in a hashing process.

A request is a plain tuple (``("hash", password_bytes)`` or ``("verify", password, encoded)``) and
``Params`` holds the configured parameters as plain values, so both can cross a process boundary
with ``marshal`` and the hashing process needs neither the config model nor pydantic.
``lower_priority`` sets the CPU priority of the calling thread; threads it creates later (argon2's
lanes) inherit it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from dataclasses import asdict, dataclass
from typing import Any

import argon2.low_level
import bcrypt

from sidecar.hashing import formats

HASHING_NICENESS = 10

Request = tuple[Any, ...]


@dataclass(frozen=True)
class Params:
    """``hashers.*`` as plain values: what a new hash is made with."""

    algorithm: str
    memory_kib: int
    iterations: int
    parallelism: int
    key_length: int
    salt_length: int
    bcrypt_cost: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def hash_password(params: Params, password: bytes) -> str:
    if params.algorithm == "bcrypt":
        if len(password) > formats.BCRYPT_MAX_BYTES:
            # bcrypt ignores everything past 72 bytes: refuse instead of truncating.
            raise ValueError(f"bcrypt cannot hash passwords longer than {formats.BCRYPT_MAX_BYTES} bytes")
        return bcrypt.hashpw(password, bcrypt.gensalt(params.bcrypt_cost)).decode()
    salt = secrets.token_bytes(params.salt_length)
    digest = formats.argon2_digest(
        password,
        salt,
        kind=argon2.low_level.Type.ID,
        time_cost=params.iterations,
        memory_kib=params.memory_kib,
        lanes=params.parallelism,
        length=params.key_length,
    )
    # The encoding argon2-cffi (libargon2's encode_string) writes, so either library reads it.
    settings = f"m={params.memory_kib},t={params.iterations},p={params.parallelism}"
    version = argon2.low_level.ARGON2_VERSION
    return f"$argon2id$v={version}${settings}${formats.b64encode(salt)}${formats.b64encode(digest)}"


def compute(params: Params, request: Request) -> Any:
    """The answer to one request; ``ValueError`` when a password cannot be hashed."""
    match request:
        case ("hash", bytes(password)):
            return hash_password(params, password)
        case ("verify", str(password), str(encoded)):
            return formats.verify(password, encoded)
    raise ValueError(f"unknown hashing request {request[:1]!r}")


def lower_priority(priority: str) -> None:
    """``idle``: ``SCHED_IDLE`` (runs only when the core has nothing else to do, preempted at once
    when the event loop wakes); ``low``: nice +10; ``normal``: unchanged. Linux applies both to the
    calling thread and the threads it starts afterwards; elsewhere this is a no-op."""
    with contextlib.suppress(OSError, AttributeError):
        if priority == "idle":
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
        elif priority == "low":
            tid = threading.get_native_id()
            os.setpriority(
                os.PRIO_PROCESS, tid, min(os.getpriority(os.PRIO_PROCESS, tid) + HASHING_NICENESS, 19)
            )

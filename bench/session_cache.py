"""The session cache's memory: bytes held per cached session (``SessionResolver``), and whether
any credential secret stays reachable from it.

Builds the services of ``sidecar serve`` over an embedded SQLite store (``session.cache_ttl: 1h``
so nothing expires during the run), stores ``--entries`` identities (each its own user: an email
trait and address, a password hash, and with ``--two-factor`` a TOTP secret and ten recovery
codes as well) with one session each, then resolves every token once under tracemalloc: the
memory still held afterwards (after a GC), divided by the entries, is what one cached session
costs (its session, its identity in the identity cache, the index entries). A few tokens are
resolved and dropped first, so the engine's statement caches are warm and not counted.

``python bench/session_cache.py [--entries 10000] [--two-factor]``; prints one JSON line:
``bytes_per_entry``, ``blocks_per_entry`` and ``secrets_reachable`` (password hashes, TOTP
secrets and recovery codes found by walking the cache with ``gc.get_referents``).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import tempfile
import tracemalloc
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sidecar.config.loader import load_config
from sidecar.identity.model import Credential, Identity, VerifiableAddress, utcnow
from sidecar.security.tokens import digest, new_session_token
from sidecar.session.model import Session

HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0{:06d}$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA"
TOTP = "otpauth://totp/sidecar:{email}?secret=JBSWY3DPEHPK3PXP{i:06d}&issuer=sidecar"


def user(i: int, two_factor: bool) -> Identity:
    email = f"user{i:06d}@example.com"
    credentials = {
        "password": Credential(
            type="password", identifiers=(email,), config={"hashed_password": HASH.format(i)}
        )
    }
    if two_factor:
        credentials["totp"] = Credential(type="totp", config={"totp_url": TOTP.format(email=email, i=i)})
        codes = [{"code": f"{i:06d}{n:04d}", "used_at": None} for n in range(10)]
        credentials["lookup_secret"] = Credential(type="lookup_secret", config={"recovery_codes": codes})
    return Identity(
        schema_id="default",
        traits={"email": email},
        verifiable_addresses=(VerifiableAddress(value=email, verified=True),),
        credentials=credentials,
    )


def secrets_of(i: int, two_factor: bool) -> list[str]:
    out = [HASH.format(i)]
    if two_factor:
        out.append(TOTP.format(email=f"user{i:06d}@example.com", i=i))
        out += [f"{i:06d}{n:04d}" for n in range(10)]
    return out


def reachable_strings(root: Any) -> set[str]:
    """Every str reachable from ``root`` through ``gc.get_referents`` (modules, types and functions
    are not followed: they lead to the whole program, not to what the cache holds)."""
    seen: set[int] = set()
    found: set[str] = set()
    stack = [root]
    skip = (type, type(sys), type(user), type(len))
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, skip):
            continue
        seen.add(id(obj))
        if isinstance(obj, str):
            found.add(obj)
            continue
        stack.extend(gc.get_referents(obj))
    return found


async def main(args: argparse.Namespace) -> dict[str, Any]:
    from sidecar.app import build_services

    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(
            overrides={
                "dsn": f"sqlite:///{tmp}/cache.db",
                "secrets": {"cookie": ["bench-cookie-secret-0123456789abcdef"]},
                "session": {"cache_ttl": "1h"},
                "log": {"level": "warning"},
            }
        )
        services = build_services(config)
        await services.database.migrate()
        await services.start()
        try:
            resolver = services.resolver
            resolver.max_entries = args.entries + 10
            people = [user(i, args.two_factor) for i in range(args.entries + 5)]
            for start in range(0, len(people), 1000):
                await services.database.identities.create_many(people[start : start + 1000])
            tokens = []
            for identity in people:
                token = new_session_token()
                session = Session(identity_id=identity.id, expires_at=utcnow() + timedelta(hours=2))
                await resolver.sessions.create(session, digest(token))
                tokens.append(token)
            for token in tokens[-5:]:  # warm-up: statement caches, interned names
                assert await resolver.resolve(token) is not None
            resolver.invalidate_all()
            tokens = tokens[: args.entries]
            del people
            gc.collect()
            tracemalloc.start()
            before = tracemalloc.take_snapshot()
            start_bytes = tracemalloc.get_traced_memory()[0]
            for token in tokens:
                assert await resolver.resolve(token) is not None
            gc.collect()
            held = tracemalloc.get_traced_memory()[0] - start_bytes
            after = tracemalloc.take_snapshot()
            tracemalloc.stop()
            blocks = sum(s.count_diff for s in after.compare_to(before, "lineno"))
            strings = reachable_strings(resolver)
            secrets = [s for i in range(args.entries) for s in secrets_of(i, args.two_factor)]
            return {
                "entries": args.entries,
                "two_factor": args.two_factor,
                "bytes_per_entry": round(held / args.entries),
                "blocks_per_entry": round(blocks / args.entries, 1),
                "secrets_reachable": sum(s in strings for s in secrets),
            }
        finally:
            await services.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--two-factor", action="store_true", help="TOTP and recovery codes as well")
    print(json.dumps(asyncio.run(main(parser.parse_args()))), flush=True)

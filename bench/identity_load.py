"""The identity side of a session-cache miss, for a realistic user: CPU µs (or instructions) per load.

``bench/decision_path.py --measure miss`` signs in an identity without credentials; real users have
a password at least, and some a second factor, and what the store reads and the resolver builds
grows with them. Here the services of ``sidecar serve`` over an embedded SQLite store hold one
user (``--user bare``: an email trait and address only, as decision_path's; ``password``: and a
password hash; ``two-factor``: and a TOTP secret and ten recovery codes), and the loop is the
resolver's identity load as a cache miss runs it (``SessionResolver._identity`` with the identity
cache off: the store read, the level, the public view, the email), then ``resolved_from``.

``python bench/identity_load.py [--user password] [--requests 2000] [--rounds 3]``; prints one JSON
line. Instructions: ``valgrind --tool=callgrind --instr-atstart=no python bench/identity_load.py
--rounds 1 --requests 1000 --callgrind``, then the total ``Ir`` (``callgrind_annotate``) / requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.instrument import callgrind, stop_background
from sidecar.config.loader import load_config
from sidecar.identity.model import Credential, Identity, VerifiableAddress, utcnow
from sidecar.session.model import Session


def user(kind: str) -> Identity:
    email = "bench@example.com"
    credentials: dict[str, Credential] = {}
    if kind != "bare":
        hashed = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaA"
        credentials["password"] = Credential(
            type="password", identifiers=(email,), config={"hashed_password": hashed}
        )
    if kind == "two-factor":
        credentials["totp"] = Credential(
            type="totp", config={"totp_url": "otpauth://totp/x?secret=JBSWY3DPEHPK3PXP"}
        )
        codes = [{"code": f"code{n:04d}", "used_at": None} for n in range(10)]
        credentials["lookup_secret"] = Credential(type="lookup_secret", config={"recovery_codes": codes})
    return Identity(
        schema_id="default",
        traits={"email": email},
        verifiable_addresses=(VerifiableAddress(value=email, verified=True),),
        credentials=credentials,
    )


async def main(args: argparse.Namespace) -> dict[str, Any]:
    from sidecar.app import build_services
    from sidecar.session.resolver import resolved_from

    with tempfile.TemporaryDirectory() as tmp:
        config = load_config(
            overrides={
                "dsn": f"sqlite:///{tmp}/identity.db",
                "secrets": {"cookie": ["bench-cookie-secret-0123456789abcdef"]},
                "session": {"cache_ttl": "0s"},
                "log": {"level": "warning"},
            }
        )
        services = build_services(config)
        await services.database.migrate()
        await services.start()
        try:
            resolver = services.resolver
            identity = await services.database.identities.create(user(args.user))
            session = Session(identity_id=identity.id, expires_at=utcnow() + timedelta(hours=1))

            async def loop(n: int) -> float:
                started = time.process_time()
                for _ in range(n):
                    person = await resolver._identity(identity.id)
                    assert person is not None
                    resolved_from(session, person, None)
                return (time.process_time() - started) / n * 1e6

            await loop(200)  # warm-up
            if args.callgrind:
                await stop_background()
                callgrind("-i", "on")
            best = min([await loop(args.requests) for _ in range(args.rounds)])
            if args.callgrind:
                callgrind("-i", "off")
            return {"user": args.user, "requests": args.requests, "us": round(best, 2)}
        finally:
            if not args.callgrind:
                await services.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--user", choices=["bare", "password", "two-factor"], default="password")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--callgrind", action="store_true", help="under callgrind --instr-atstart=no")
    print(json.dumps(asyncio.run(main(parser.parse_args()))), flush=True)

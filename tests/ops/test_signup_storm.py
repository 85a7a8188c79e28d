"""A sign-up storm against ``sidecar serve``: past ``hashers.max_queue`` the answer is 503 with
``Retry-After``, never an endless wait, and no refused sign-up leaves an identity behind."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from tests.ops.serve import base_config, migrate, ports, running, serve_argv, write_config


async def _storm(base: str, n: int, name: str = "storm") -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=n + 5)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        flows = [(await client.get("/self-service/registration/api")).json()["id"] for _ in range(n)]

        async def submit(i: int, flow: str) -> httpx.Response:
            return await client.post(
                f"/self-service/registration?flow={flow}",
                json={
                    "method": "password",
                    "traits": {"email": f"{name}-{i}@example.test"},
                    "password": "a-long-storm-passphrase-77",
                },
            )

        return await asyncio.gather(*(submit(i, f) for i, f in enumerate(flows)))


def test_a_signup_storm_is_refused_past_the_queue_and_leaves_nothing_half_done(tmp_path: Path) -> None:
    public_port, admin_port = ports()
    config = base_config(tmp_path, public_port, admin_port)
    # Slow enough hashes that the 30 submissions overlap; one at a time, two may wait.
    config["hashers"] = {
        "argon2": {"memory": "16MB", "iterations": 2, "parallelism": 1},
        "max_concurrent": 1,
        "max_queue": 2,
    }
    path = write_config(tmp_path / "sidecar.yaml", config)
    migrate(path, tmp_path)
    with running(serve_argv(path), cwd=tmp_path, public_port=public_port, admin_port=admin_port) as proc:
        answers = asyncio.run(_storm(f"{proc.public_url}/.auth", 30))
        statuses = [a.status_code for a in answers]
        assert set(statuses) <= {200, 503}, statuses
        refused = [a for a in answers if a.status_code == 503]
        assert refused, statuses
        assert statuses.count(200) >= 3  # the one hashing and the two waiting
        for answer in refused:
            assert answer.headers["retry-after"] == "1"
            assert answer.json()["error"]["code"] == 503
        identities = httpx.get(f"{proc.admin_url}/admin/identities?page_size=100", timeout=10).json()
        assert len(identities) == statuses.count(200)
        # The storm is over: a sign-up goes through again.
        again = asyncio.run(_storm(f"{proc.public_url}/.auth", 1, "after"))
        assert again[0].status_code == 200, again[0].text

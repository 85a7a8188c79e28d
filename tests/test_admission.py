"""Admission for expensive work (password hashes, SAML checks): slots, the waiting queue, and 503 past it."""

from __future__ import annotations

import asyncio

import pytest

from sidecar import errors
from sidecar.admission import Admission


async def test_past_the_slots_and_the_queue_the_gate_answers_503_with_retry_after() -> None:
    gate = Admission(1, 1, refusal="busy")
    release = asyncio.Event()
    entered: list[str] = []

    async def check(name: str) -> None:
        async with gate.admitted():
            entered.append(name)
            await release.wait()

    first = asyncio.create_task(check("first"))
    await asyncio.sleep(0)
    second = asyncio.create_task(check("second"))  # waits for the slot
    await asyncio.sleep(0)
    assert entered == ["first"] and gate.queue_depth == 1
    with pytest.raises(errors.ServiceUnavailable) as refused:
        async with gate.admitted():
            pass
    assert refused.value.code == 503 and refused.value.headers["Retry-After"] == "1"
    assert refused.value.message == "busy"
    release.set()
    await asyncio.gather(first, second)
    assert entered == ["first", "second"] and gate.queue_depth == 0
    async with gate.admitted():  # free again
        pass


async def test_zero_means_the_cpu_count() -> None:
    assert Admission(0, 0, refusal="busy").concurrency >= 1
    assert Admission(3, 0, refusal="busy").concurrency == 3

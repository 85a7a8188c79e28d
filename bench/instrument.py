"""callgrind around the measured rounds of an in-process bench (bench/decision_path.py,
bench/proxy_path.py, bench/identity_load.py), run under ``valgrind --tool=callgrind
--instr-atstart=no``: instructions then count the measured rounds alone."""

from __future__ import annotations

import asyncio
import os
import subprocess


def callgrind(*args: str) -> None:
    """``callgrind_control ARGS <this process>`` (``-i on``, ``-i off``, ``-d``): blocking on purpose,
    nothing else runs meanwhile."""
    subprocess.run(["callgrind_control", *args, str(os.getpid())], check=True, capture_output=True)


async def stop_background() -> None:
    """Cancel every other task of the loop. Background work (store monitor, courier and revocation
    polls) runs per second, not per request, and under valgrind a second holds few requests: it
    would swamp the count."""
    current = asyncio.current_task()
    background = [t for t in asyncio.all_tasks() if t is not current]
    for task in background:
        task.cancel()
    await asyncio.gather(*background, return_exceptions=True)

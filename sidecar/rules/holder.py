"""The current rule set, swapped atomically on hot reload.

A background task polls the files' (size, mtime_ns) every ``interval``: polling needs no inotify
dependency, works on bind mounts and Kubernetes ConfigMap symlink swaps, and costs one ``stat``
per file per second. A bad edit is logged with file, rule and key and the previous rules stay.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path

from sidecar.rules.loader import RulesError, expand_paths, load_rules
from sidecar.rules.model import RuleSet

log = logging.getLogger("sidecar.rules")

_Fingerprint = tuple[tuple[str, int, int], ...]


class RulesHolder:
    """``current`` is read on every request (a plain attribute: no lock, no copy)."""

    def __init__(self, patterns: Sequence[str], *, base: Path | None = None, interval: float = 1.0) -> None:
        self.patterns = list(patterns)
        self.base = base
        self.interval = interval
        self.current = RuleSet(())
        self._fingerprint: _Fingerprint = ()
        self._task: asyncio.Task[None] | None = None
        self._generation = 0

    def _files(self) -> list[Path]:
        return expand_paths(self.patterns, self.base)

    @staticmethod
    def _stat(files: list[Path]) -> _Fingerprint:
        out = []
        for f in files:
            try:
                st = f.stat()
                out.append((str(f), st.st_size, st.st_mtime_ns))
            except OSError:
                out.append((str(f), -1, -1))
        return tuple(out)

    def load(self) -> RuleSet:
        """Load now; raises ``RulesError`` and keeps the previous set on any problem."""
        files = self._files()
        fingerprint = self._stat(files)
        rules = load_rules(files)
        self._generation += 1
        self.current = dataclasses.replace(rules, generation=self._generation)
        self._fingerprint = fingerprint
        return self.current

    def reload_if_changed(self) -> bool:
        """True when the files changed and the new rules were installed."""
        fingerprint = self._stat(self._files())
        if fingerprint == self._fingerprint:
            return False
        try:
            self.load()
        except RulesError as exc:
            # Remember the bad state so it is logged once, not every second.
            self._fingerprint = fingerprint
            log.error("access rules not reloaded, keeping the previous rules:\n%s", exc)
            return False
        log.info(
            "access rules reloaded: %d rules from %d files", len(self.current.rules), len(self.current.files)
        )
        return True

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await asyncio.to_thread(self.reload_if_changed)
            except Exception:  # the watcher must survive anything a file system does
                log.exception("access rules watcher failed; retrying")

    def start(self) -> None:
        if self._task is None and self.patterns:
            self._task = asyncio.get_running_loop().create_task(self._watch(), name="rules-watcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

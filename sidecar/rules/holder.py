"""The current rule set, swapped atomically on hot reload.

A background task polls the files' (size, mtime_ns) every ``interval``: polling needs no inotify
dependency, works on bind mounts and Kubernetes ConfigMap symlink swaps, and costs one ``stat``
per file per second. A changed file is read only once it has stayed unchanged for ``settle``
seconds and did not change while it was read: an editor or ``kubectl cp`` writing in place
(truncate, then write) shows a half-written file for a moment, and loading it would swap in a
partial rule set. An empty file is refused on reload for the same reason (to remove every rule,
write ``rules: []``). A bad edit is logged with file, rule and key and the previous rules stay;
so is an edit the analysis refuses (a shadowed rule, a tie), with the rules it names. Warnings
(overlaps) are logged and the new rules go live.

Coverage: each ``RuleSet`` counts its rules' matches in ``hits``; when a reload replaces it, its
counts are folded into ``retired`` (by rule id) on the event loop, the only thread that counts,
so no match is lost between the swap and the fold.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path

from sidecar.rules.loader import RulesError, expand_paths, load_rules
from sidecar.rules.model import Order, RuleSet

log = logging.getLogger("sidecar.rules")

_Fingerprint = tuple[tuple[str, int, int], ...]


class RulesHolder:
    """``current`` is read on every request (a plain attribute: no lock, no copy)."""

    def __init__(
        self,
        patterns: Sequence[str],
        *,
        base: Path | None = None,
        interval: float = 1.0,
        settle: float = 0.2,
        order: Order = "first_match",
        reserved_prefix: str | None = None,
    ) -> None:
        self.patterns = list(patterns)
        self.base = base
        self.interval = interval
        self.settle = settle
        self.order: Order = order
        self.reserved_prefix = reserved_prefix
        self.current = RuleSet(())
        self.retired: dict[str, int] = {}
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
        self._install(*self._read())
        for warning in self.current.warnings:
            log.warning("access rules: %s", warning)
        return self.current

    def _read(self) -> tuple[RuleSet, _Fingerprint]:
        files = self._files()
        fingerprint = self._stat(files)
        rules = load_rules(files, order=self.order, reserved_prefix=self.reserved_prefix)
        return rules, fingerprint

    def _install(self, rules: RuleSet, fingerprint: _Fingerprint) -> None:
        old = self.current
        for rule in old.rules:
            if old.hits and old.hits[rule.position]:
                self.retired[rule.id] = self.retired.get(rule.id, 0) + old.hits[rule.position]
        self._generation += 1
        self.current = dataclasses.replace(rules, generation=self._generation, hits=[0] * len(rules.rules))
        self._fingerprint = fingerprint

    def matches_since_start(self) -> dict[str, int]:
        """Matches per rule id over every rule set since start (this process); call on the loop."""
        counts = dict(self.retired)
        current = self.current
        for rule in current.rules:
            counts[rule.id] = counts.get(rule.id, 0) + (current.hits[rule.position] if current.hits else 0)
        return counts

    def _prepare(self) -> tuple[RuleSet, _Fingerprint] | None:
        """The new rules when the files changed, settled and load (off the loop: reads, analyses)."""
        files = self._files()
        fingerprint = self._stat(files)
        if fingerprint == self._fingerprint:
            return None
        if self.settle > 0:
            time.sleep(self.settle)
            if self._stat(files) != fingerprint:
                return None  # still being written: the next poll looks again
        empty = [name for name, size, _ in fingerprint if size == 0]
        try:
            if empty:
                raise RulesError(
                    [f"{name}: the file is empty (to remove every rule, write 'rules: []')" for name in empty]
                )
            prepared = self._read()
        except RulesError as exc:
            # Remember the bad state so it is logged once, not every second.
            self._fingerprint = fingerprint
            log.error("access rules not reloaded, keeping the previous rules:\n%s", exc)
            return None
        if prepared[1] != fingerprint or self._stat(files) != fingerprint:
            return None  # changed while it was read: the next poll reads the settled files
        return prepared

    def _installed(self, prepared: tuple[RuleSet, _Fingerprint]) -> None:
        self._install(*prepared)
        for warning in self.current.warnings:
            log.warning("access rules: %s", warning)
        log.info(
            "access rules reloaded: %d rules from %d files", len(self.current.rules), len(self.current.files)
        )

    def reload_if_changed(self) -> bool:
        """True when the files changed and the new rules were installed."""
        prepared = self._prepare()
        if prepared is None:
            return False
        self._installed(prepared)
        return True

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                prepared = await asyncio.to_thread(self._prepare)
                if prepared is not None:
                    self._installed(prepared)  # on the loop: see the module docstring
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

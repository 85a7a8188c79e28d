"""A private PostgreSQL (initdb + pg_ctl) on a free 127.0.0.1 port, for tests that restart it.

Never the shared server on 5432. As root the server runs as the ``postgres`` user (PostgreSQL
refuses root); its data directory is a fresh temp dir that is removed afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import free_port
from tests.proxy.harness import binary


def _as_postgres(args: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return args
    return [binary("runuser"), "-u", "postgres", "--", *args]


@dataclass
class PrivatePostgres:
    root: Path
    port: int
    fsync: bool = False

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _pg_ctl(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            _as_postgres([binary("pg_ctl"), "-D", str(self.data), *args]),
            check=True,
            capture_output=True,
            timeout=timeout,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        if not self.fsync:
            options += " -c fsync=off"
        self._pg_ctl("-l", str(self.root / "server.log"), "-o", options, "-w", "start")

    def stop(self) -> None:
        """A fast shutdown (what a restart or a failover does to open connections)."""
        self._pg_ctl("-m", "fast", "-w", "stop")

    def pid(self) -> int | None:
        pid_file = self.data / "postmaster.pid"
        with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
            return int(pid_file.read_text().splitlines()[0])
        return None


@contextlib.contextmanager
def private_postgres(*, fsync: bool = False) -> Iterator[PrivatePostgres]:
    """``fsync``: durable commits, as in production (benchmarks); tests leave it off for speed."""
    root = Path(tempfile.mkdtemp(prefix="sidecar-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    pg = PrivatePostgres(root, free_port(), fsync)
    try:
        subprocess.run(
            _as_postgres(
                [binary("initdb"), "-D", str(pg.data), "-A", "trust", "-U", "postgres", "--no-sync"]
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )
        pg.start()
        yield pg
    finally:
        pid = pg.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)  # by PID: a fast shutdown
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and pg.pid() is not None:
                time.sleep(0.1)
        shutil.rmtree(root, ignore_errors=True)

"""Private Redis Cluster and Sentinel groups for the scale-out tests.

Every server runs on free 127.0.0.1 ports in its own temp dir, is stopped by its PID, and can be
killed mid-test. Never the shared Redis on 6379.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.conftest import free_port
from tests.proxy.harness import Proc, binary, spawn

NODE_TIMEOUT_MS = 1000  # how long a silent master takes to be declared failed


def cli(port: int, *args: str, timeout: float = 10) -> str:
    done = subprocess.run(
        [binary("redis-cli"), "-h", "127.0.0.1", "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return done.stdout


def replicated(port: int, key: str, timeout_ms: int = 10000) -> None:
    """Return once a replica of the master on ``port`` has every write that master took so far.

    ``WAIT`` alone cannot say that from a connection of its own: it counts replicas that have the
    calling connection's last write, and a connection that wrote nothing has none (it answers at
    once). So write ``key`` (one the master owns: in a cluster, a key of its slots), then ``WAIT``:
    the replication stream is ordered, so a replica with this write has every earlier one."""
    done = subprocess.run(
        [binary("redis-cli"), "-h", "127.0.0.1", "-p", str(port)],
        input=f"SET {key} fence\nWAIT 1 {timeout_ms}\n",
        capture_output=True,
        text=True,
        timeout=timeout_ms / 1000 + 10,
        check=True,
    )
    answers = done.stdout.split()
    assert answers[0] == "OK" and int(answers[-1]) >= 1, (
        f"no replica acknowledged the writes: {done.stdout!r}"
    )


def _server(tmp: Path, port: int, *extra: str) -> Proc:
    root = tmp / f"redis-{port}"
    root.mkdir(exist_ok=True)
    args = [binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(root)]
    # No 5 s pause before a replica's first sync: a master killed right after start-up must
    # already have a replica that holds its data.
    args += ["--save", "", "--appendonly", "no", "--repl-diskless-sync-delay", "0", *extra]
    return spawn(args, port)


@dataclass
class Cluster:
    """Three masters with one replica each (``redis-cli --cluster create … --cluster-replicas 1``)."""

    nodes: dict[int, Proc] = field(default_factory=dict)

    @property
    def ports(self) -> list[int]:
        return list(self.nodes)

    def live_port(self) -> int:
        return next(p for p, proc in self.nodes.items() if proc.popen.poll() is None)

    def url(self) -> str:
        return f"redis://127.0.0.1:{self.live_port()}/0"

    def master_of(self, key: str) -> int:
        """The port of the master that serves ``key``'s slot now."""
        slot = int(cli(self.live_port(), "CLUSTER", "KEYSLOT", key).strip())
        for line in cli(self.live_port(), "CLUSTER", "NODES").splitlines():
            parts = line.split()
            if "master" not in parts[2] or "fail" in parts[2]:
                continue
            for span in parts[8:]:
                low, _, high = span.partition("-")
                if low.isdigit() and int(low) <= slot <= int(high or low):
                    return int(parts[1].split(":")[1].split("@")[0])
        raise AssertionError(f"no master serves slot {slot}")

    def kill(self, port: int) -> None:
        """SIGKILL, as a crashed node (no goodbye to the cluster)."""
        proc = self.nodes[port]
        proc.popen.kill()
        proc.popen.wait(5)

    def wait_failover(self, dead: int, timeout: float = 20) -> None:
        """Until a replica of the killed master ``dead`` serves its slots, as every node sees it."""
        deadline = time.monotonic() + timeout
        while True:
            live = [p for p, proc in self.nodes.items() if proc.popen.poll() is None]
            views = [cli(p, "CLUSTER", "NODES") for p in live]
            still_owner = any(
                f":{dead}@" in line and len(line.split()) > 8 for view in views for line in view.splitlines()
            )
            if not still_owner:
                self.wait_ok(max(1.0, deadline - time.monotonic()))
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"no replica took over from {dead} within {timeout} s")
            time.sleep(0.1)

    def wait_ok(self, timeout: float = 20) -> None:
        """Until every live node says ``cluster_state:ok`` and no slot lacks a live master."""
        deadline = time.monotonic() + timeout
        while True:
            live = [p for p, proc in self.nodes.items() if proc.popen.poll() is None]
            states = [cli(p, "CLUSTER", "INFO") for p in live]
            replication = [cli(p, "INFO", "replication") for p in live]
            synced = all("role:slave" not in r or "master_link_status:up" in r for r in replication)
            if all("cluster_state:ok" in s for s in states) and synced:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"the cluster did not become ok within {timeout} s: {states}")
            time.sleep(0.1)


@contextlib.contextmanager
def redis_cluster(tmp: Path) -> Iterator[Cluster]:
    cluster = Cluster()
    try:
        for _ in range(6):
            port = free_port()
            cluster.nodes[port] = _server(
                tmp,
                port,
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                str(free_port()),
                "--cluster-config-file",
                str(tmp / f"nodes-{port}.conf"),
                "--cluster-node-timeout",
                str(NODE_TIMEOUT_MS),
                "--cluster-replica-validity-factor",
                "0",
            )
        addresses = [f"127.0.0.1:{p}" for p in cluster.ports]
        cli(
            cluster.ports[0],
            "--cluster",
            "create",
            *addresses,
            "--cluster-replicas",
            "1",
            "--cluster-yes",
            timeout=60,
        )
        cluster.wait_ok()
        yield cluster
    finally:
        for proc in cluster.nodes.values():
            proc.stop()


@dataclass
class SentinelGroup:
    master: Proc
    replica: Proc
    sentinels: list[Proc]
    name: str = "mymaster"

    @property
    def sentinel_addresses(self) -> list[str]:
        return [f"127.0.0.1:{s.port}" for s in self.sentinels]

    def current_master_port(self) -> int:
        out = cli(self.sentinels[0].port, "SENTINEL", "get-master-addr-by-name", self.name).split()
        return int(out[1])

    def wait_master(self, port: int, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while self.current_master_port() != port:
            if time.monotonic() > deadline:
                raise AssertionError(f"the sentinels did not promote {port} within {timeout} s")
            time.sleep(0.1)


@contextlib.contextmanager
def redis_sentinel(tmp: Path) -> Iterator[SentinelGroup]:
    """A master, its replica and three sentinels (quorum 2) that fail over after 1 s of silence."""
    started: list[Proc] = []
    try:
        master = _server(tmp, free_port())
        started.append(master)
        replica = _server(tmp, free_port(), "--replicaof", "127.0.0.1", str(master.port))
        started.append(replica)
        sentinels = []
        for i in range(3):
            port = free_port()
            conf = tmp / f"sentinel-{i}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {tmp}\n"
                f"sentinel monitor mymaster 127.0.0.1 {master.port} 2\n"
                "sentinel down-after-milliseconds mymaster 1000\n"
                "sentinel failover-timeout mymaster 5000\n"
                "sentinel parallel-syncs mymaster 1\n"
            )
            sentinels.append(spawn([binary("redis-server"), str(conf), "--sentinel"], port))
            started.append(sentinels[-1])
        group = SentinelGroup(master, replica, sentinels)
        deadline = time.monotonic() + 20
        while "slaves=1" not in cli(sentinels[0].port, "INFO", "sentinel").replace(" ", ""):
            if time.monotonic() > deadline:
                raise AssertionError("the sentinels never saw the replica")
            time.sleep(0.1)
        yield group
    finally:
        for proc in reversed(started):
            proc.stop()

"""Through ``sidecar serve``: a shadowed rule file refuses the start, a shadowed hot reload keeps
the old rules and logs why, and ``/admin/rules/coverage`` counts real proxied requests."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from tests.ops.serve import base_config, clean_env, migrate, ports, running, serve_argv, write_config
from tests.ops.test_metrics import samples, value
from tests.proxy.harness import upstream_server

GOOD = """version: 1
rules:
  - {id: open, match: {paths: ["/public/**"]}, require: public}
  - {id: spare, match: {paths: ["/spare"]}, require: public}
  - {id: members, match: {paths: ["/**"]}, require: authenticated}
"""
# "admin" is never reached: "everything" above it matches all it does.
SHADOWED = """version: 1
rules:
  - {id: everything, match: {paths: ["/**"]}, require: public}
  - {id: admin, match: {paths: ["/admin/**"]}, require: authenticated}
"""


def touch(path: Path, text: str) -> None:
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_a_shadowed_rule_file_refuses_the_start(tmp_path: Path) -> None:
    public_port, admin_port = ports()
    rules = tmp_path / "rules.yaml"
    rules.write_text(SHADOWED)
    path = write_config(
        tmp_path / "cfg.yaml", base_config(tmp_path, public_port, admin_port, rules=[str(rules)])
    )
    done = subprocess.run(
        serve_argv(path), cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "access rules refused" in done.stderr
    assert (
        f"{rules}:4: rule 'admin' match: never matches: shadowed by 'everything' ({rules}:3)" in done.stderr
    )
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{public_port}/", timeout=1)


@pytest.mark.parametrize("workers", [1, 2])
def test_reload_refuses_shadowing_and_coverage_counts_traffic(tmp_path: Path, workers: int) -> None:
    public_port, admin_port = ports()
    rules = tmp_path / "rules.yaml"
    rules.write_text(GOOD)
    with upstream_server() as upstream:
        cfg = base_config(
            tmp_path,
            public_port,
            admin_port,
            proxy={"upstream": f"http://127.0.0.1:{upstream.port}"},
            rules=[str(rules)],
        )
        path = write_config(tmp_path / "cfg.yaml", cfg)
        migrate(path, tmp_path)
        argv = serve_argv(path, "--workers", str(workers))
        with running(argv, cwd=tmp_path, public_port=public_port, admin_port=admin_port) as proc:
            # Every worker has loaded its rules before the file changes.
            deadline = time.monotonic() + 60
            while len(re.findall(r"worker \d+ serving", proc.log())) < workers:
                assert time.monotonic() < deadline, proc.log()[-3000:]
                time.sleep(0.2)
            with httpx.Client(base_url=proc.public_url, timeout=10) as c:
                for _ in range(5):
                    assert c.get("/public/x").status_code == 200
                for _ in range(3):
                    assert c.get("/members/x", headers={"Accept": "application/json"}).status_code == 401

            # Counts of every worker add up (each folds its counts in every few seconds).
            deadline = time.monotonic() + 20
            while True:
                coverage = httpx.get(f"{proc.admin_url}/admin/rules/coverage", timeout=5).json()
                matches = {r["id"]: r["matches"] for r in coverage["rules"]}
                if matches == {"open": 5, "spare": 0, "members": 3} or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert matches == {"open": 5, "spare": 0, "members": 3}
            assert coverage["never_matched"] == ["spare"]
            assert coverage["rules"][0]["source"] == f"{rules}:3"
            metrics = httpx.get(f"{proc.admin_url}/metrics", timeout=5).text
            assert value(metrics, "sidecar_rule_matches_total", rule="open") == 5
            assert ("sidecar_rule_matches_total", (("rule", "spare"),)) in samples(metrics)

            # A shadowing edit is refused (each worker that watches logs why); the old rules stay.
            touch(rules, SHADOWED)
            deadline = time.monotonic() + 15
            while "access rules not reloaded" not in proc.log() and time.monotonic() < deadline:
                time.sleep(0.2)
            log = proc.log()
            assert "access rules not reloaded, keeping the previous rules" in log, log[-3000:]
            assert "rule 'admin' match: never matches: shadowed by 'everything'" in log
            assert "access rules reloaded" not in log
            with httpx.Client(base_url=proc.public_url, timeout=10) as c:
                for _ in range(4):
                    assert c.get("/admin/x", headers={"Accept": "application/json"}).status_code == 401
                    assert c.get("/spare").status_code == 200

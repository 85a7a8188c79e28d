"""``proxy.upstream_client`` through ``sidecar serve``: set in the file, by its key path in the
environment, or by the old ``SIDECAR_UPSTREAM_CLIENT`` variable, which used to stop the start
with ``upstream_client: unknown key``."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from sidecar.config.loader import deep_merge
from tests.ops.probes import RULES, Recorder, recording_upstream
from tests.ops.serve import base_config, clean_env, migrate, ports, running, serve_argv, write_config


@pytest.fixture(scope="module")
def upstream() -> Iterator[Recorder]:
    with recording_upstream() as recorder:
        yield recorder


def _config(tmp: Path, upstream: Recorder, **proxy: Any) -> tuple[Path, int, int]:
    public_port, admin_port = ports()
    (tmp / "rules.yaml").write_text(RULES)
    sections = {"proxy": {"upstream": f"http://127.0.0.1:{upstream.port}", **proxy}, "rules": ["rules.yaml"]}
    path = write_config(tmp / "sidecar.yaml", deep_merge(base_config(tmp, public_port, admin_port), sections))
    migrate(path, tmp)
    return path, public_port, admin_port


@pytest.mark.parametrize(
    ("file_key", "env", "expected"),
    [
        pytest.param({}, {}, "http1", id="default"),
        pytest.param({"upstream_client": "aiohttp"}, {}, "aiohttp", id="file"),
        pytest.param({}, {"SIDECAR_PROXY__UPSTREAM_CLIENT": "aiohttp"}, "aiohttp", id="env-key-path"),
        pytest.param({}, {"SIDECAR_UPSTREAM_CLIENT": "aiohttp"}, "aiohttp", id="env-old-name"),
        pytest.param(
            {"upstream_client": "aiohttp"},
            {"SIDECAR_UPSTREAM_CLIENT": "http1"},
            "http1",
            id="env-over-file",
        ),
    ],
)
def test_serve_starts_and_proxies_with_the_chosen_client(
    tmp_path: Path, upstream: Recorder, file_key: dict[str, str], env: dict[str, str], expected: str
) -> None:
    path, public_port, admin_port = _config(tmp_path, upstream, **file_key)
    target = f"/client-{expected}-{tmp_path.name}"
    with running(
        serve_argv(path), cwd=tmp_path, public_port=public_port, admin_port=admin_port, env=clean_env(**env)
    ) as proc:
        answer = httpx.get(proc.public_url + target, timeout=10)
        assert answer.status_code == 200, answer.text
        assert target.encode() in upstream.targets()
        assert f"(proxy.upstream_client: {expected})" in proc.log()


def test_an_unknown_client_stops_the_start_naming_the_key(tmp_path: Path, upstream: Recorder) -> None:
    path, _, _ = _config(tmp_path, upstream)
    out = subprocess.run(
        serve_argv(path),
        cwd=tmp_path,
        env=clean_env(SIDECAR_UPSTREAM_CLIENT="httpx"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "proxy.upstream_client:" in out.stderr
    assert "upstream_client: unknown key" not in out.stderr

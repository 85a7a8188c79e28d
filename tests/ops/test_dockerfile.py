"""The Dockerfile: hadolint-clean, and its exact ENTRYPOINT + CMD and HEALTHCHECK work here.

There is no container engine on the CI machine, so the image's command is run directly: the
config file is "mounted" by pointing the ENTRYPOINT's config path at a temporary file, the
Dockerfile's ENV is applied on top of the test environment, and WORKDIR is a temporary dir.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.ops.serve import COOKIE_SECRET, base_config, clean_env, migrate, ports, running, write_config

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def tool(name: str) -> str:
    """A tool installed by the test extras (next to this Python), else from PATH."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    assert found, f"{name} is not installed: pip install -e '.[test]'"
    return found


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    items = instructions()
    last_from = max(i for i, (word, _) in enumerate(items) if word == "FROM")
    return items[last_from:]


def exec_form(instruction: str) -> list[str]:
    values = [json.loads(rest) for word, rest in final_stage() if word == instruction]
    assert values, f"no {instruction} in the final stage"
    return list(values[-1])


def test_hadolint_is_clean() -> None:
    result = subprocess.run([tool("hadolint"), str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_multi_stage_non_root_slim_without_build_tools() -> None:
    items = instructions()
    froms = [rest for word, rest in items if word == "FROM"]
    assert len(froms) >= 2
    base = dict(re.findall(r"ARG (\w+)=(\S+)", DOCKERFILE.read_text()))["PYTHON_IMAGE"]
    assert "slim" in base
    final = final_stage()
    user = [rest for word, rest in final if word == "USER"][-1]
    assert user.split(":")[0] not in ("0", "root")
    assert user.split(":")[0].isdigit()  # runAsNonRoot can check a numeric uid
    runs = " ".join(rest for word, rest in final if word == "RUN")
    for build_tool in ("apt-get install", "gcc", "build-essential", "pip install"):
        assert build_tool not in runs
    exposed = {p for word, rest in final if word == "EXPOSE" for p in rest.split()}
    assert exposed == {"4433", "4434"}
    assert any(word == "HEALTHCHECK" for word, _ in final)


def test_entrypoint_serves_with_mounted_config_and_env(tmp_path: Path) -> None:
    entry, cmd = exec_form("ENTRYPOINT"), exec_form("CMD")
    mounted = "/etc/sidecar/sidecar.yaml"
    assert entry[:2] == ["sidecar", "serve"] and mounted in entry + cmd
    public_port, admin_port = ports()
    # The mounted file has no ports or secrets: those come from the environment, as documented.
    config = base_config(tmp_path, 0, 0)
    del config["serve"], config["secrets"]
    config_path = write_config(tmp_path / "sidecar.yaml", config)
    migrate(write_config(tmp_path / "migrate.yaml", base_config(tmp_path, 0, 0)), tmp_path)
    argv = [str(config_path) if a == mounted else a for a in entry + cmd]
    env = clean_env(
        SIDECAR_SERVE__PUBLIC__HOST="127.0.0.1",
        SIDECAR_SERVE__PUBLIC__PORT=str(public_port),
        SIDECAR_SERVE__ADMIN__PORT=str(admin_port),
        SIDECAR_SECRETS__COOKIE=f"[{COOKIE_SECRET}]",
    )
    for word, rest in final_stage():
        if word == "ENV":
            for name, value in re.findall(r"(\w+)=(\S+)", rest):
                if name != "PATH":  # /opt/sidecar/bin is this venv's bin, already first on PATH
                    env[name] = value
    with running(argv, cwd=tmp_path, public_port=public_port, admin_port=admin_port, env=env) as proc:
        assert httpx.get(f"{proc.public_url}/.auth/health/ready", timeout=5).status_code == 200
        check = healthcheck_command()
        assert subprocess.run(check, env=env, cwd=tmp_path, timeout=10).returncode == 0
        os.kill(proc.process.pid, signal.SIGTERM)
        assert proc.process.wait(30) == 0
    # With the listener gone the same check fails, as Docker needs it to.
    assert subprocess.run(healthcheck_command(), env=env, cwd=tmp_path, capture_output=True).returncode != 0


def healthcheck_command() -> list[str]:
    rest = [rest for word, rest in final_stage() if word == "HEALTHCHECK"][-1]
    _, _, command = rest.partition(" CMD ")
    return list(json.loads(command))

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
import yaml

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
    for build_tool in ("gcc", "build-essential", "pip install", "make"):
        assert build_tool not in runs
    # The only system package is a runtime one (SAML signatures), without recommends, lists removed.
    installed = re.findall(r"apt-get install (.*?)(?:&&|$)", runs)
    assert [i.split() for i in installed] == [["-y", "--no-install-recommends", "xmlsec1=1.2.37-2"]]
    assert "rm -rf /var/lib/apt/lists/*" in runs
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
        assert httpx.get(f"{proc.public_url}/.auth/health/ready", timeout=30).status_code == 200
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


def _docker_run_words(command: str) -> list[str]:
    """The words bash makes of ``docker run ...`` (so ``$(openssl rand -hex 32)`` and ``$PWD``
    expand as they would for the reader, in the repository's folder)."""
    assert command.startswith("docker run "), command
    out = subprocess.run(
        ["bash", "-c", "printf '%s\\0' " + command.removeprefix("docker run ")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split("\0")[:-1]


def documented_docker_runs() -> dict[str, list[str]]:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    [line] = [line.strip() for line in readme.splitlines() if "docker run " in line]
    deploy = (ROOT / "docs" / "DEPLOY.md").read_text(encoding="utf-8").replace("\\\n", " ")
    [block] = [line.strip() for line in deploy.splitlines() if line.strip().startswith("docker run --rm -p")]
    return {
        "README.md": _docker_run_words(line.strip("`")),
        "docs/DEPLOY.md": _docker_run_words(" ".join(block.split())),
    }


def test_documented_docker_run_works_as_written(tmp_path: Path) -> None:
    """README's one-liner (and DEPLOY's copy of it): each option checked against the image, then
    the image's command run with exactly what the options give it."""
    runs = documented_docker_runs()
    words = runs["README.md"]
    secret = next(w for w in words if w.startswith("SIDECAR_SECRETS__COOKIE="))
    assert [w for w in runs["docs/DEPLOY.md"] if not w.startswith("SIDECAR_SECRETS__COOKIE=")] == [
        w for w in words if w != secret
    ]
    options: dict[str, list[str]] = {"-p": [], "-v": [], "-e": []}
    rest = list(words)
    while rest and rest[0].startswith("-"):
        flag = rest.pop(0)
        if flag != "--rm":
            options[flag].append(rest.pop(0))
    image, args = rest[0], rest[1:]
    assert image == "sidecar"  # the tag of the documented `docker build -t sidecar .`
    assert options["-p"] == ["4433:4433"]
    exposed = {p for word, rest_ in final_stage() if word == "EXPOSE" for p in rest_.split()}
    assert "4433" in exposed
    [mount] = options["-v"]
    source, target, mode = mount.split(":")
    entry, cmd = exec_form("ENTRYPOINT"), exec_form("CMD")
    assert target in entry + cmd and mode == "ro"
    assert Path(source).is_file(), source
    config = yaml.safe_load(Path(source).read_text())
    assert config["serve"]["public"]["base_url"] == "http://127.0.0.1:4433/.auth"  # matches -p
    env_pairs = dict(e.split("=", 1) for e in options["-e"])
    cookie = env_pairs["SIDECAR_SECRETS__COOKIE"]
    assert cookie.startswith("[") and len(cookie) == 66  # [ + 64 hex digits + ]

    public_port, admin_port = ports()
    argv = [source if a == target else a for a in entry + cmd + args]
    env = clean_env(
        **env_pairs,
        # Inside the container the image listens on 0.0.0.0:4433; here, free loopback ports.
        SIDECAR_SERVE__PUBLIC__HOST="127.0.0.1",
        SIDECAR_SERVE__PUBLIC__PORT=str(public_port),
        SIDECAR_SERVE__PUBLIC__BASE_URL=f"http://127.0.0.1:{public_port}/.auth",
        SIDECAR_SERVE__ADMIN__PORT=str(admin_port),
    )
    for word, rest_ in final_stage():
        if word == "ENV":
            for name, value in re.findall(r"(\w+)=(\S+)", rest_):
                if name != "PATH":
                    env[name] = value
    workdir = tmp_path / "var-lib-sidecar"  # the image's WORKDIR: empty, writable by the user
    workdir.mkdir()
    with running(argv, cwd=workdir, public_port=public_port, admin_port=admin_port, env=env) as proc:
        base = f"{proc.public_url}/.auth"
        assert httpx.get(f"{base}/health/ready", timeout=30).status_code == 200
        assert httpx.get(f"{base}/", timeout=30).status_code == 200
        flow = httpx.get(f"{base}/self-service/registration/api", timeout=30).json()
        done = httpx.post(
            f"{base}/self-service/registration?flow={flow['id']}",
            json={
                "method": "password",
                "password": "a-long-docker-passphrase",
                "traits": {"email": "d@example.test"},
            },
            timeout=30,  # a default-cost argon2 hash on a busy machine
        )
        assert done.status_code == 200, done.text
        log = proc.log()
    assert (workdir / "sidecar.db").exists()  # the default dsn, in WORKDIR
    assert "Traceback" not in log

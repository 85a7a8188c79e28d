"""k8s/: every overlay renders with kustomize, validates against the Kubernetes schemas, and
agrees with the code (ports, probe paths, mounted files, config keys loaded by load_config).
"""

from __future__ import annotations

import base64
import fnmatch
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml

from sidecar.config.loader import load_config
from sidecar.config.model import Config
from sidecar.rules.loader import parse_rules
from tests.live import live_sidecar
from tests.ops.test_dockerfile import exec_form, tool

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
KUBE_VERSION = "1.30.0"  # the oldest release with every field used (preStop sleep action)
OVERLAYS = ["dev", "prod"]


def render(path: Path) -> list[dict[str, Any]]:
    out = subprocess.run([tool("kubectl"), "kustomize", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(K8S / "overlays" / request.param)


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def kinds(docs: list[dict[str, Any]]) -> set[str]:
    return {d["kind"] for d in docs}


def validate(docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            name = f"{doc['kind']}/{doc['metadata'].get('name')}"
            raise AssertionError(f"{name}: {exc.message} at {list(exc.path)}") from None


@pytest.mark.parametrize("path", ["base", "demo", *(f"overlays/{o}" for o in OVERLAYS)])
def test_kustomizations_render_and_validate(path: str) -> None:
    docs = render(K8S / path)
    assert "Deployment" in kinds(docs), f"{path} renders no Deployment"
    validate(docs)


def test_ingress_nginx_example_validates_and_points_at_the_nginx_endpoint() -> None:
    docs = [d for d in yaml.safe_load_all((K8S / "ingress-nginx" / "ingress.yaml").read_text()) if d]
    validate(docs)
    notes = docs[0]["metadata"]["annotations"]
    assert notes["nginx.ingress.kubernetes.io/auth-url"].endswith("/.auth/authz/nginx")
    assert "/.auth/self-service/login/browser" in notes["nginx.ingress.kubernetes.io/auth-signin"]
    assert notes["nginx.ingress.kubernetes.io/auth-signin-redirect-param"] == "return_to"


# --- consistency with the code -------------------------------------------------------------


class Pod:
    """The Deployment's pod, the sidecar's config as the container would load it, and its files."""

    def __init__(self, docs: list[dict[str, Any]], root: Path) -> None:
        self.docs = docs
        self.deployment = one(docs, "Deployment", "app")
        spec = self.deployment["spec"]["template"]["spec"]
        self.spec = spec
        self.sidecar = next(c for c in spec["containers"] if c["name"] == "sidecar")
        self.app = next(c for c in spec["containers"] if c["name"] != "sidecar")
        self.ports = {p["name"]: p["containerPort"] for p in self.sidecar["ports"]}
        self.root = root
        self.mounts: dict[str, str] = {}  # mount path -> ConfigMap name
        volumes = {v["name"]: v for v in spec["volumes"]}
        for mount in self.sidecar["volumeMounts"]:
            volume = volumes[mount["name"]]
            if "configMap" in volume:
                self.mounts[mount["mountPath"]] = volume["configMap"]["name"]
                data = one(docs, "ConfigMap", volume["configMap"]["name"])["data"]
                target = root / mount["mountPath"].lstrip("/")
                target.mkdir(parents=True, exist_ok=True)
                for key, text in data.items():
                    (target / key).write_text(text, encoding="utf-8")

    def env(self) -> dict[str, str]:
        env: dict[str, str] = {}
        for source in self.sidecar.get("envFrom", []):
            secret = one(self.docs, "Secret", source["secretRef"]["name"])
            env.update({k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()})
            env.update(secret.get("stringData", {}))
        env.update({e["name"]: e["value"] for e in self.sidecar.get("env", []) if "value" in e})
        return env

    def argv(self) -> list[str]:
        """What the container runs: the image's ENTRYPOINT (no `command` override) + args."""
        assert "command" not in self.sidecar
        args: list[str] = self.sidecar.get("args", exec_form("CMD"))
        return exec_form("ENTRYPOINT") + args

    def config_path(self) -> str:
        argv = self.argv()
        return argv[argv.index("-c") + 1]

    def local(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    def config(self) -> Config:
        return load_config([self.local(self.config_path())], environ=self.env(), dev="--dev" in self.argv())


@pytest.fixture(scope="module")
def pods(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Pod]]:
    yield {o: Pod(render(K8S / "overlays" / o), tmp_path_factory.mktemp(o)) for o in OVERLAYS}


@pytest.mark.parametrize("name", OVERLAYS)
def test_configmap_config_loads_and_matches_the_ports(pods: dict[str, Pod], name: str) -> None:
    pod = pods[name]
    config = pod.config()
    assert pod.ports == {"http": config.serve.public.port, "admin": config.serve.admin.port}
    assert config.serve.public.host == "0.0.0.0"
    # The admin port must be reachable by in-cluster callers (Prometheus); the policy limits it.
    assert config.serve.admin.host == "0.0.0.0"
    annotations = pod.deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(config.serve.admin.port)
    assert annotations["prometheus.io/path"] == "/metrics"
    prefix = config.serve.public.prefix
    assert pod.sidecar["readinessProbe"]["httpGet"] == {"path": f"{prefix}/health/ready", "port": "http"}
    assert pod.sidecar["livenessProbe"]["httpGet"] == {"path": f"{prefix}/health/alive", "port": "http"}
    assert pod.sidecar["resources"]["requests"] and pod.app["resources"]["requests"]


@pytest.mark.parametrize("name", OVERLAYS)
def test_app_is_reachable_only_through_the_sidecar(pods: dict[str, Pod], name: str) -> None:
    pod = pods[name]
    config = pod.config()
    assert "ports" not in pod.app
    listen = next(a for a in pod.app["args"] if a.startswith("-listen="))
    assert listen.startswith("-listen=127.0.0.1:")
    assert config.proxy.upstream == f"http://{listen.removeprefix('-listen=')}"
    service = one(pod.docs, "Service", "app")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    admin_service = one(pod.docs, "Service", "app-sidecar-admin")
    assert [p["targetPort"] for p in admin_service["spec"]["ports"]] == ["admin"]


@pytest.mark.parametrize("name", OVERLAYS)
def test_network_policy_keeps_the_admin_port_in_the_cluster(pods: dict[str, Pod], name: str) -> None:
    pod = pods[name]
    policy = one(pod.docs, "NetworkPolicy")
    open_ports: set[int] = set()
    limited: set[int] = set()
    for rule in policy["spec"]["ingress"]:
        target = limited if rule.get("from") else open_ports
        target.update(p["port"] for p in rule["ports"])
        for peer in rule.get("from", []):
            assert "ipBlock" not in peer  # pods and namespaces only: nothing outside the cluster
    assert open_ports == {pod.ports["http"]}
    assert limited == {pod.ports["admin"]}


@pytest.mark.parametrize("name", OVERLAYS)
def test_mounted_files_are_the_ones_the_config_names(pods: dict[str, Pod], name: str) -> None:
    pod = pods[name]
    config = pod.config()
    assert str(PurePosixPath(pod.config_path()).parent) in pod.mounts
    for schema in config.identity.schemas:
        assert schema.url and schema.url.startswith("file://")
        path = schema.url.removeprefix("file://")
        json.loads(pod.local(path).read_text())
    assert config.rules
    sources = []
    for pattern in config.rules:
        directory = str(PurePosixPath(pattern).parent)
        assert directory in pod.mounts, f"{pattern} is not under a mounted ConfigMap"
        files = sorted(
            p for p in pod.local(directory).iterdir() if fnmatch.fnmatch(p.name, PurePosixPath(pattern).name)
        )
        assert files, pattern
        sources += [(str(p), p.read_text()) for p in files]
    assert len(parse_rules(sources).rules) > 0
    # Rules hot-reload only when the kubelet can update the files in place: no subPath, fixed name.
    rules_map = pod.mounts[str(PurePosixPath(config.rules[0]).parent)]
    assert all("subPath" not in m for m in pod.sidecar["volumeMounts"])
    assert rules_map == "sidecar-rules"


def test_dev_overlay_is_one_sqlite_replica(pods: dict[str, Pod]) -> None:
    pod = pods["dev"]
    config = pod.config()
    assert config.dsn.startswith("sqlite:///") and config.redis is None and config.dev
    assert pod.deployment["spec"]["replicas"] == 1
    assert not {"HorizontalPodAutoscaler", "PodDisruptionBudget", "Job"} & kinds(pod.docs)


def test_prod_overlay_uses_postgres_redis_and_migrates(pods: dict[str, Pod]) -> None:
    pod = pods["prod"]
    config = pod.config()
    assert config.dsn.startswith("postgres://") and config.redis is not None and not config.dev
    assert {"HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "StatefulSet"} <= kinds(
        pod.docs
    )
    services = {d["metadata"]["name"]: d for d in pod.docs if d["kind"] == "Service"}
    assert config.redis.url.split("//")[1].split(":")[0] in services
    assert config.dsn.split("@")[1].split(":")[0] in services
    hpa = one(pod.docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == pod.deployment["metadata"]["name"]
    job = one(pod.docs, "Job", "sidecar-migrate")
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:3] == ["sidecar", "migrate", "up"]
    assert container["command"][container["command"].index("-c") + 1] == pod.config_path()
    assert container["image"] == pod.sidecar["image"]
    grace = pod.spec["terminationGracePeriodSeconds"]
    from sidecar.server import SHUTDOWN_GRACE

    assert grace > pod.sidecar["lifecycle"]["preStop"]["sleep"]["seconds"] + SHUTDOWN_GRACE


def test_probe_paths_answer_on_the_probed_listener(pods: dict[str, Pod], tmp_path: Path) -> None:
    """The dev pod's config, served for real (files at their mounted paths under a temp root)."""
    pod = pods["dev"]
    config = pod.config()
    schemas = [
        s.model_copy(update={"url": "file://" + str(pod.local(s.url.removeprefix("file://")))})
        for s in config.identity.schemas
        if s.url
    ]
    config = config.model_copy(
        update={
            "dsn": f"sqlite:///{tmp_path}/probe.db",
            "identity": config.identity.model_copy(update={"schemas": schemas}),
            "rules": [str(pod.local(p)) for p in config.rules],
            "proxy": config.proxy.model_copy(update={"upstream": None}),
        }
    )
    with live_sidecar(config) as live:
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            path = pod.sidecar[probe]["httpGet"]["path"]
            assert httpx.get(live.root_url + path, timeout=5).status_code == 200, path

"""/metrics: parsed with prometheus_client's text parser, moves with traffic, sums every worker;
recording is cheap; no secret reaches the logs of a real ``sidecar serve``."""

from __future__ import annotations

import asyncio
import gc
import shutil
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from sidecar.config.loader import deep_merge
from sidecar.metrics import Metrics
from tests.ops.serve import (
    SERVERS,
    base_config,
    clean_env,
    migrate,
    on_server,
    ports,
    running,
    serve_argv,
    write_config,
)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


async def test_every_recording_method_shows_up() -> None:
    async def courier() -> int:
        return 7

    m = Metrics(hashing_queue=lambda: 3, courier_queue=courier, saml_queue=lambda: 2)
    m.request("proxy", 200)
    m.request("proxy", 200)
    m.observe_decision("api", "allow", 0.0003)
    m.observe_decision("api", "deny", 0.002)
    m.session_cache(hit=True)
    m.session_cache(hit=False)
    m.observe_upstream(0.05)
    m.observe_upstream(2.0, error="timeout")
    m.upstream_observer()(0.003)
    m.flow_submission("login", "password", "success")
    m.saml_message("response", "ok")
    m.saml_message("response", "signature")
    m.saml_message("response", "signature")
    m.saml_message("logout_request", "busy")
    m.observe_saml_check(0.12)
    m.observe_saml_check(3.0)
    body, content_type = await m.render()
    text = body.decode()
    assert content_type.startswith("text/plain")
    assert value(text, "sidecar_requests_total", route_class="proxy", status="200") == 2
    assert value(text, "sidecar_decisions_total", rule="api", decision="allow") == 1
    assert value(text, "sidecar_decision_seconds_count") == 2
    assert value(text, "sidecar_decision_seconds_bucket", le="0.0005") == 1
    assert value(text, "sidecar_session_cache_total", result="hit") == 1
    assert value(text, "sidecar_session_cache_total", result="miss") == 1
    assert value(text, "sidecar_upstream_seconds_count") == 3
    assert value(text, "sidecar_upstream_seconds_bucket", le="0.005") == 1
    assert value(text, "sidecar_upstream_errors_total", error="timeout") == 1
    assert (
        value(text, "sidecar_flow_submissions_total", flow="login", method="password", result="success") == 1
    )
    assert value(text, "sidecar_saml_verifications_total", message="response", outcome="ok") == 1
    assert value(text, "sidecar_saml_verifications_total", message="response", outcome="signature") == 2
    assert value(text, "sidecar_saml_verifications_total", message="logout_request", outcome="busy") == 1
    assert value(text, "sidecar_saml_verification_seconds_count") == 2
    assert value(text, "sidecar_saml_verification_seconds_bucket", le="0.25") == 1
    assert value(text, "sidecar_saml_verification_queue_depth") == 2
    assert value(text, "sidecar_hashing_queue_depth") == 3
    assert value(text, "sidecar_courier_queue_depth") == 7


async def test_every_collection_of_the_garbage_collector_is_a_pause_observation() -> None:
    m = Metrics()
    gc.callbacks.append(m.on_gc)
    try:
        gc.collect()  # one full collection
        gc.collect(0)
    finally:
        gc.callbacks.remove(m.on_gc)
    m.heap_frozen(1234)
    text = (await m.render())[0].decode()
    assert value(text, "sidecar_gc_pause_seconds_count", generation="2") == 1
    assert value(text, "sidecar_gc_pause_seconds_count", generation="0") >= 1
    assert value(text, "sidecar_gc_pause_seconds_sum", generation="2") > 0
    assert value(text, "sidecar_gc_frozen_objects") == 1234


@pytest.mark.parametrize("server", SERVERS)
def test_each_worker_freezes_its_start_up_heap(tmp_path: Path, server: str) -> None:
    """Every worker of ``sidecar serve --workers 2`` (spawned, each building its own services)
    takes its start-up heap out of the collector's scans before it serves, and reports it: one
    ``sidecar_gc_frozen_objects`` sample per worker process."""
    public_port, admin_port = ports()
    settings = deep_merge(base_config(tmp_path, public_port, admin_port), on_server(server))
    config = write_config(tmp_path / "cfg.yaml", settings)
    migrate(config, tmp_path)
    argv = serve_argv(config, "--workers", "2")
    env = clean_env(PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"))
    with running(argv, cwd=tmp_path, public_port=public_port, admin_port=admin_port, env=env) as proc:
        frozen: dict[str, float] = {}
        deadline = time.monotonic() + 60  # a worker still starting shows 0 (its gauge, not set yet)
        while not (len(frozen) == 2 and all(frozen.values())) and time.monotonic() < deadline:
            text = httpx.get(f"{proc.admin_url}/metrics", timeout=5).text
            frozen = {
                dict(labels)["pid"]: v
                for (name, labels), v in samples(text).items()
                if name == "sidecar_gc_frozen_objects"
            }
            time.sleep(0.2)
        assert len(frozen) == 2, frozen
        assert str(proc.process.pid) not in frozen  # the workers, not the parent
        # A worker's services, apps, schemas and modules: well over 100k objects (~250k).
        assert all(n > 100_000 for n in frozen.values()), frozen
        assert proc.terminate() == 0


async def test_a_failing_gauge_source_does_not_break_the_scrape() -> None:
    async def broken() -> int:
        raise ConnectionError("database down")

    m = Metrics(courier_queue=broken)
    body, _ = await m.render()
    assert value(body.decode(), "sidecar_courier_queue_depth") == 0


@pytest.mark.parametrize("server", SERVERS)
def test_metrics_move_and_logs_hold_no_secrets(tmp_path: Path, server: str) -> None:
    public_port, admin_port = ports()
    settings = deep_merge(base_config(tmp_path, public_port, admin_port), on_server(server))
    config = write_config(tmp_path / "cfg.yaml", settings)
    migrate(config, tmp_path)
    password = "Zq8-unguessable-passphrase-417"
    token = "ory_st_secretTokenValue0123456789"
    cookie = "cookieSecretValue0123456789abcdef"
    with running(serve_argv(config), cwd=tmp_path, public_port=public_port, admin_port=admin_port) as proc:
        before = httpx.get(f"{proc.admin_url}/metrics", timeout=5).text
        created = httpx.post(
            f"{proc.admin_url}/admin/identities",
            json={
                "schema_id": "default",
                "traits": {"email": "ops@example.test"},
                "credentials": {"password": {"config": {"password": password}}},
            },
            timeout=10,
        )
        assert created.status_code == 201, created.text
        with httpx.Client(base_url=proc.public_url, timeout=5) as client:
            for _ in range(5):
                client.get(
                    f"/.auth/health/ready?token={token}&code=123456",
                    headers={"Authorization": f"Bearer {token}", "Cookie": f"ory_kratos_session={cookie}"},
                )
            client.get("/.auth/sessions/whoami", headers={"X-Session-Token": token})
        after = httpx.get(f"{proc.admin_url}/metrics", timeout=5).text
        assert (
            value(after, "sidecar_requests_total", route_class="health", status="200")
            - value(before, "sidecar_requests_total", route_class="health", status="200")
            == 5
        )
        assert value(after, "sidecar_requests_total", route_class="admin", status="201") == 1
        assert value(after, "sidecar_requests_total", route_class="metrics", status="200") >= 1
        assert ("sidecar_hashing_queue_depth", ()) in samples(after)
    log = proc.log()
    assert "/.auth/health/ready" in log  # the access log was captured at all
    for secret in (password, token, cookie, "123456"):
        assert secret not in log


def test_workers_add_up_in_one_scrape(tmp_path: Path) -> None:
    """Each worker counts in process and folds into its own file every second: one scrape, from
    whichever worker, shows every worker's requests, and each file holds a share of them."""
    public_port, admin_port = ports()
    config = write_config(tmp_path / "cfg.yaml", base_config(tmp_path, public_port, admin_port))
    migrate(config, tmp_path)
    argv = serve_argv(config, "--workers", "2")
    shared = tmp_path / "prometheus"
    env = clean_env(PROMETHEUS_MULTIPROC_DIR=str(shared))
    with running(argv, cwd=tmp_path, public_port=public_port, admin_port=admin_port, env=env) as proc:
        n = 60

        def health_count() -> float:
            text = httpx.get(f"{proc.admin_url}/metrics", timeout=5).text
            return value(text, "sidecar_requests_total", route_class="health", status="200")

        # The readiness probes that started the server were counted too: wait until their last
        # fold is in (two scrapes, more than a fold apart, agree).
        before, now = -1.0, health_count()
        while now != before:
            time.sleep(1.5)
            before, now = now, health_count()

        async def hit() -> None:
            # A new connection per request so the kernel spreads them over both workers.
            for _ in range(n):
                async with httpx.AsyncClient() as client:
                    r = await client.get(f"{proc.public_url}/.auth/health/alive")
                    assert r.status_code == 200

        asyncio.run(hit())
        seen = 0.0
        deadline = time.monotonic() + 10  # the other worker's fold is at most a second away
        while seen < before + n and time.monotonic() < deadline:
            seen = health_count()
            time.sleep(0.2)
        assert seen == before + n
        per_worker = {}
        for path in sorted(shared.glob("counter_*.db")):  # one file per worker process
            alone = tmp_path / path.stem
            alone.mkdir()
            shutil.copy(path, alone / path.name)
            registry = CollectorRegistry()
            MultiProcessCollector(registry, path=str(alone))  # type: ignore[no-untyped-call]
            per_worker[path.name] = value(
                generate_latest(registry).decode(),
                "sidecar_requests_total",
                route_class="health",
                status="200",
            )
        assert len([c for c in per_worker.values() if c > 0]) == 2, per_worker
        assert sum(per_worker.values()) == before + n
        assert proc.terminate() == 0

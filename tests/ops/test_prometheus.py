"""deploy/prometheus/rules.yml and deploy/grafana/sidecar.json against the real thing.

``promtool`` checks and unit-tests the rules; then a real Prometheus server (Debian's
``prometheus``) scrapes ``sidecar serve`` every second with the rules loaded, traffic is driven
through the sidecar, and Prometheus' HTTP API must know every series the rules and the dashboard
use, evaluate every rule without error, answer every dashboard query, and raise the store alert
when the sidecar's Redis goes away.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.conftest import free_port
from tests.ops.probes import Recorder, recording_upstream
from tests.ops.serve import (
    Proc,
    migrate,
    ports,
    proxied_config,
    running,
    serve_argv,
    write_config,
)
from tests.proxy.harness import redis_server

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
RULES_TEST = ROOT / "deploy" / "prometheus" / "rules.test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "sidecar.json"
PASSWORD = "a-long-prometheus-passphrase"
# What Grafana puts in place of the dashboard's variables: all instances, a window of 4 scrapes.
GRAFANA_VARS = {"$__rate_interval": "15s", "$instance": ".*"}


def tool(name: str) -> str:
    found = shutil.which(name)
    assert found, f"{name} is not installed (Debian package prometheus; .ci/run installs it)"
    return found


def metric_names(expr: str) -> set[str]:
    """The metric and recording-rule names a PromQL expression reads."""
    names = set(re.findall(r"\b(sidecar[:_][a-z0-9_:]+|up)\b(?=\s*[{\[)]|\s*$|\s*[=!<>])", expr))
    return {n for n in names if not n.endswith(":")}


def rule_exprs() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [r["expr"] for g in groups for r in g["rules"]]


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]


def variable_queries() -> list[tuple[str, str]]:
    """The dashboard's ``label_values(metric, label)`` variables as (metric, label)."""
    dash = json.loads(DASHBOARD.read_text())
    found = []
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            m = re.fullmatch(r"label_values\((\w+), (\w+)\)", var["query"]["query"])
            assert m, var
            found.append((m.group(1), m.group(2)))
    return found


def grafana(expr: str) -> str:
    for name, value in GRAFANA_VARS.items():
        expr = expr.replace(name, value)
    return expr


def test_promtool_checks_and_unit_tests_the_rules() -> None:
    promtool = tool("promtool")
    checked = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 13 rules found" in checked.stdout
    tested = subprocess.run(
        [promtool, "test", "rules", RULES_TEST.name],
        cwd=RULES_TEST.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout
    # Every alert has a unit test that fires it.
    alerts = {
        r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r
    }
    fired = set()
    for case in yaml.safe_load(RULES_TEST.read_text())["tests"]:
        fired |= {t["alertname"] for t in case.get("alert_rule_test", []) if t["exp_alerts"]}
    assert fired == alerts


def test_the_dashboard_is_a_grafana_dashboard() -> None:
    dash = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    assert {v["name"] for v in dash["templating"]["list"]} == {"datasource", "instance"}
    for panel in dash["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert "$__rate_interval" in target["expr"] or "[" not in target["expr"], target["expr"]
    titles = " ".join(p["title"] for p in dash["panels"]).lower()
    for topic in ("decision", "latency", "login", "mfa", "courier", "hashing", "store"):
        assert topic in titles


@contextlib.contextmanager
def prometheus(tmp: Path, target: str) -> Iterator[str]:
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
        "rule_files": [str(RULES)],
        "scrape_configs": [{"job_name": "sidecar", "static_configs": [{"targets": [target]}]}],
    }
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    log = (tmp / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            tool("prometheus"),
            f"--config.file={path}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (tmp / "prometheus.log").read_text()[-3000:]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "prometheus did not become ready"
            time.sleep(0.2)
        yield url
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait(10)
        log.close()


def query(url: str, expr: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=10)
    body = r.json()
    assert r.status_code == 200 and body["status"] == "success", (expr, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def wait_for(url: str, expr: str, timeout: float = 30) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        found = query(url, expr)
        if found or time.monotonic() > deadline:
            assert found, f"no data for {expr}"
            return found
        time.sleep(0.5)


def drive_traffic(proc: Proc, guesser: str) -> None:
    email = f"prom-{uuid.uuid4().hex[:8]}@example.test"
    with httpx.Client(base_url=proc.public_url, timeout=20) as c:
        flow = c.get("/.auth/self-service/registration/api").json()
        r = c.post(
            f"/.auth/self-service/registration?flow={flow['id']}",
            json={"method": "password", "traits": {"email": email}, "password": PASSWORD},
        )
        assert r.status_code == 200, r.text
        token = r.json()["session_token"]
        statuses = []
        for i in range(9):
            flow = c.get("/.auth/self-service/login/api").json()
            password = PASSWORD if i == 0 else f"wrong-{i}"
            r = c.post(
                f"/.auth/self-service/login?flow={flow['id']}",
                json={"method": "password", "identifier": email, "password": password},
                headers={"X-Forwarded-For": guesser},
            )
            statuses.append(r.status_code)
        assert statuses[0] == 200 and 400 in statuses and 429 in statuses, statuses
        for _ in range(5):
            assert c.get("/public/page").status_code == 200
            assert c.get("/members/page", headers={"X-Session-Token": token}).status_code == 200
            assert c.get("/members/page", headers={"Accept": "application/json"}).status_code == 401
            assert c.get("/.auth/authz/nginx", headers={"X-Original-URI": "/members/x"}).status_code == 401


def test_a_real_prometheus_scrapes_sidecar_and_evaluates_rules_and_dashboard(tmp_path: Path) -> None:
    public_port, admin_port = ports()
    with redis_server(tmp_path) as redis, recording_upstream() as upstream:
        assert isinstance(upstream, Recorder)
        cfg = proxied_config(
            tmp_path,
            public_port,
            admin_port,
            upstream.port,
            redis={"url": f"redis://127.0.0.1:{redis.port}/0"},
        )
        path = write_config(tmp_path / "sidecar.yaml", cfg)
        migrate(path, tmp_path)
        with (
            running(serve_argv(path), cwd=tmp_path, public_port=public_port, admin_port=admin_port) as proc,
            prometheus(tmp_path, f"127.0.0.1:{admin_port}") as prom,
        ):
            wait_for(prom, 'up{job="sidecar"} == 1')
            # A labelled counter appears at its first increment: traffic twice, scrapes between,
            # so every rate() has samples on both sides of an increase.
            drive_traffic(proc, "198.51.100.20")
            time.sleep(2.5)
            drive_traffic(proc, "198.51.100.21")
            wait_for(prom, 'sum(rate(sidecar_flow_submissions_total{result="rate_limited"}[15s])) > 0')
            wait_for(prom, "sidecar:login_failures:ratio_rate5m > 0")

            # Every series a rule or a panel reads exists in Prometheus.
            used = set().union(*(metric_names(e) for e in [*rule_exprs(), *dashboard_exprs()]))
            used |= {metric for metric, _ in variable_queries()}
            raw = {n for n in used if ":" not in n}
            assert raw >= {
                "sidecar_requests_total",
                "sidecar_decisions_total",
                "sidecar_decision_seconds_bucket",
                "sidecar_flow_submissions_total",
                "sidecar_courier_queue_depth",
                "sidecar_hashing_queue_depth",
                "sidecar_store_up",
                "sidecar_upstream_seconds_bucket",
                "sidecar_session_cache_total",
            }, raw
            for name in sorted(raw - {"sidecar_upstream_errors_total"}):  # no upstream failed
                assert query(prom, f'count({name}{{job="sidecar"}})'), f"Prometheus has no {name}"

            # Every rule evaluated without error; recorded series carry values.
            groups = httpx.get(f"{prom}/api/v1/rules", timeout=10).json()["data"]["groups"]
            evaluated = [r for g in groups for r in g["rules"]]
            assert len(evaluated) == 13
            assert all(r["health"] == "ok" for r in evaluated), [
                (r["name"], r.get("lastError")) for r in evaluated
            ]
            for record in ("sidecar:requests:rate5m", "sidecar:decision_seconds:p99_5m"):
                assert wait_for(prom, record), record

            # The instance variable lists the sidecar (Grafana asks the label values API).
            for metric, label in variable_queries():
                r = httpx.get(f"{prom}/api/v1/label/{label}/values", params={"match[]": metric}, timeout=10)
                assert r.json()["data"] == [f"127.0.0.1:{admin_port}"], r.text
            # Every dashboard query runs as Grafana would send it; the traffic panels have data.
            answered = {expr: query(prom, grafana(expr)) for expr in dashboard_exprs()}
            for needle in (
                "sidecar_decisions_total",
                "sidecar_decision_seconds_bucket",
                'flow="login"',
                'result="rate_limited"',
                "sidecar_store_up",
                "sidecar_courier_queue_depth",
                "sidecar_session_cache_total",
                "sidecar_upstream_seconds_bucket",
            ):
                hits = [e for e in answered if needle in e]
                assert hits and all(answered[e] for e in hits), (needle, {e: answered[e] for e in hits})
            decisions = {
                r["metric"]["decision"] for r in answered[next(e for e in answered if "decisions_total" in e)]
            }
            assert {"allow", "login"} <= decisions, decisions
            stores = query(prom, 'sidecar_store_up{job="sidecar"}')
            assert {s["metric"]["store"]: s["value"][1] for s in stores} == {"database": "1", "redis": "1"}

            # The Redis goes away: the store gauge drops and the alert is raised (pending for 1m).
            redis.stop()
            wait_for(prom, 'sidecar_store_up{store="redis"} == 0')
            deadline = time.monotonic() + 30
            while True:
                alerts = httpx.get(f"{prom}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
                raised = [a for a in alerts if a["labels"]["alertname"] == "SidecarStoreUnavailable"]
                if raised or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            assert [a["labels"]["store"] for a in raised] == ["redis"], alerts
            assert raised[0]["state"] in ("pending", "firing")


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            'sum by (le) (rate(sidecar_decision_seconds_bucket{instance=~"$instance"}[5m]))',
            {"sidecar_decision_seconds_bucket"},
        ),
        ("sidecar:request_errors:ratio_rate5m > 0.05", {"sidecar:request_errors:ratio_rate5m"}),
        ('up{job="sidecar"} == 0', {"up"}),
    ],
)
def test_metric_names_are_read_from_expressions(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names

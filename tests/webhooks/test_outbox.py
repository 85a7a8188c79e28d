"""The durable web hook outbox through ``sidecar serve`` with a real local receiver: a receiver that
is down and comes back, a sidecar killed with deliveries queued, two sidecars sharing one outbox,
and a dead letter retried from the admin API. Every delivery carries ``Idempotency-Key`` and a
``Webhook-Signature`` checked here with the README's receiver snippet. (Kratos sends these from a
goroutine and loses them on restart: kratos#652, ``selfservice/hook/web_hook.go``.)"""

from __future__ import annotations

import importlib.util
import os
import signal
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port
from tests.docs.test_snippets import ROOT
from tests.ops.serve import Proc, base_config, ports, running, serve_argv, write_config
from tests.receiver import Answer, Received, Receiver, http_receiver

SECRET = "outbox-signing-secret-0123456789"
PASSWORD = "correct-Horse-battery-staple-42"


def _receiver_snippet() -> Any:
    """README "Web hooks" shows examples/webhook_receiver.py; this is that very file."""
    spec = importlib.util.spec_from_file_location("webhook_receiver", ROOT / "examples/webhook_receiver.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


verify_signature = _receiver_snippet().verify_signature


def config_for(tmp: Path, dsn: str, hook_port: int, **webhooks: Any) -> tuple[Path, int, int]:
    public, admin = ports()
    config = base_config(tmp, public, admin, dsn=dsn)
    config["webhooks"] = {
        "signing_secret": SECRET,
        "initial_backoff": "200ms",
        "max_backoff": "1s",
        "worker_interval": "100ms",
        "lease": "3s",
        "max_attempts": 100,  # the receiver stays down for a while: nothing may die meanwhile
        **webhooks,
    }
    config["selfservice"]["flows"] = {
        "registration": {
            "after": {
                "password": {
                    "hooks": [
                        {"hook": "session"},
                        {
                            "hook": "web_hook",
                            "config": {
                                "url": f"http://127.0.0.1:{hook_port}/events",
                                "method": "POST",
                                "body": "base64://"
                                + __import__("base64")
                                .b64encode(b"function(ctx) { email: ctx.identity.traits.email }")
                                .decode(),
                                "response": {"ignore": True},
                                "timeout": "1s",
                            },
                        },
                    ]
                }
            }
        }
    }
    path = write_config(tmp / f"sidecar-{public}.yaml", config)
    return path, public, admin


def migrate(path: Path, tmp: Path) -> None:
    from tests.ops.serve import migrate as run_migrate

    run_migrate(path, tmp)


def register(proc: Proc) -> str:
    email = f"o-{uuid.uuid4().hex[:8]}@example.test"
    with httpx.Client(base_url=proc.public_url + "/.auth", timeout=30) as client:
        flow = client.get("/self-service/registration/api").json()
        done = client.post(
            f"/self-service/registration?flow={flow['id']}",
            json={"method": "password", "password": PASSWORD, "traits": {"email": email}},
        )
    assert done.status_code == 200, done.text
    return email


def deliveries(proc: Proc, status: str | None = None) -> list[dict[str, Any]]:
    params = {"status": status} if status else {}
    answer = httpx.get(f"{proc.admin_url}/admin/webhooks/deliveries", params=params)
    assert answer.status_code == 200, answer.text
    return list(answer.json())


def wait(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError("condition not reached in time")


def delivered_once(receiver: Receiver, emails: list[str]) -> None:
    import json

    wait(lambda: {json.loads(r.body)["email"] for r in receiver.received} >= set(emails))
    time.sleep(1.0)  # anything sent twice would arrive by now
    keys = Counter(r.headers["idempotency-key"] for r in receiver.received)
    assert all(n == 1 for n in keys.values()), keys
    for request in receiver.received:
        assert verify_signature(SECRET, request.headers, request.body)
        assert not verify_signature("another-secret-000000", request.headers, request.body)


def test_receiver_down_then_up_and_a_killed_sidecar(tmp_path: Path) -> None:
    hook_port = free_port()
    dsn = f"sqlite:///{tmp_path}/outbox.db"
    path, public, admin = config_for(tmp_path, dsn, hook_port)
    migrate(path, tmp_path)
    with running(serve_argv(path), cwd=tmp_path, public_port=public, admin_port=admin) as first:
        emails = [register(first) for _ in range(3)]
        # Nobody listens: the flows answered anyway, and the outbox keeps trying.
        wait(lambda: all(d["attempts"] >= 1 for d in deliveries(first)) and len(deliveries(first)) == 3)
        failed = deliveries(first)[0]
        assert failed["status"] in ("queued", "processing") and failed["last_error"]
        os.kill(first.process.pid, signal.SIGKILL)  # mid-queue, no chance to hand anything back
        first.process.wait(10)
    with http_receiver(port=hook_port) as receiver:
        path2, public2, admin2 = config_for(tmp_path, dsn, hook_port)
        with running(serve_argv(path2), cwd=tmp_path, public_port=public2, admin_port=admin2) as second:
            delivered_once(receiver, emails)
            wait(lambda: [d["status"] for d in deliveries(second)] == ["delivered"] * 3)
            assert all(d["last_status_code"] == 200 for d in deliveries(second))


def test_two_sidecars_share_one_outbox(tmp_path: Path, postgres_dsn: str) -> None:
    hook_port = free_port()
    path_a, public_a, admin_a = config_for(tmp_path, postgres_dsn, hook_port)
    path_b, public_b, admin_b = config_for(tmp_path, postgres_dsn, hook_port)
    migrate(path_a, tmp_path)
    with (
        running(serve_argv(path_a), cwd=tmp_path, public_port=public_a, admin_port=admin_a) as a,
        running(serve_argv(path_b), cwd=tmp_path, public_port=public_b, admin_port=admin_b) as b,
    ):
        emails = [register(a if n % 2 else b) for n in range(6)]
        wait(lambda: sum(d["attempts"] for d in deliveries(a)) >= 6)
        with http_receiver(port=hook_port) as receiver:
            delivered_once(receiver, emails)
        assert [d["status"] for d in deliveries(b)] == ["delivered"] * 6


def test_dead_letters_are_listed_and_retried(tmp_path: Path) -> None:
    def failing(request: Received) -> Answer:
        return Answer(500, b"no")

    with http_receiver(failing) as receiver:
        dsn = f"sqlite:///{tmp_path}/dead.db"
        path, public, admin = config_for(tmp_path, dsn, receiver.port, max_attempts=2)
        migrate(path, tmp_path)
        with running(serve_argv(path), cwd=tmp_path, public_port=public, admin_port=admin) as proc:
            register(proc)
            wait(lambda: len(deliveries(proc, "dead")) == 1)
            [dead] = deliveries(proc, "dead")
            assert dead["attempts"] == 2 and dead["last_status_code"] == 500
            assert dead["last_error"] == "the receiver answered 500"
            assert len(receiver.received) == 2
            assert len({r.headers["idempotency-key"] for r in receiver.received}) == 1
            receiver.responder = lambda request: Answer(204)
            retried = httpx.post(f"{proc.admin_url}/admin/webhooks/deliveries/{dead['id']}/retry")
            assert retried.status_code == 202
            wait(lambda: deliveries(proc)[0]["status"] == "delivered")
            again = httpx.post(f"{proc.admin_url}/admin/webhooks/deliveries/{dead['id']}/retry")
            assert again.status_code == 409
            assert (
                httpx.get(f"{proc.admin_url}/admin/webhooks/deliveries", params={"status": "x"}).status_code
                == 400
            )


@pytest.mark.parametrize("missing", ["signing_secret"])
def test_fire_and_forget_needs_a_signing_secret(tmp_path: Path, missing: str) -> None:
    from sidecar.config.loader import ConfigError
    from tests.conftest import make_config

    hook = {
        "hook": "web_hook",
        "config": {"url": "http://127.0.0.1:1/x", "method": "POST", "response": {"ignore": True}},
    }
    with pytest.raises(ConfigError) as refused:
        make_config(selfservice={"flows": {"login": {"after": {"hooks": [hook]}}}})
    assert "webhooks.signing_secret" in str(refused.value)

"""Breached passwords through the k-anonymity range API (Kratos
``selfservice/strategy/password/validator.go``), against a local fake range server and a real
sidecar: only the 5-character prefix leaves, ``max_breaches`` is the threshold, and
``ignore_network_errors`` decides what an unreachable API means."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import free_port, make_config
from tests.live import LiveSidecar, live_sidecar
from tests.receiver import Answer, Received, Receiver, http_receiver

BREACHED = "Tr0ub4dor&3-horse-staple"  # not in the offline list: only the range API knows it
CLEAN = "correct-Horse-battery-staple-42"


def _sha1(password: str) -> str:
    return hashlib.sha1(password.encode(), usedforsecurity=False).hexdigest().upper()


def range_api(counts: dict[str, str]) -> Any:
    """Kratos' range format: ``SUFFIX:COUNT`` lines for every hash under the asked prefix, plus noise."""

    def respond(request: Received) -> Answer:
        prefix = request.path.rsplit("/", 1)[-1]
        lines = ["0018A45C4D1DEF81644B54AB7F969B88D65:1", "00D4F6E8FA6EECAD2A3AA415EEC418D38EC:2"]
        for password, count in counts.items():
            digest = _sha1(password)
            if digest.startswith(prefix):
                lines.append(digest[5:] + (f":{count}" if count else ""))
        return Answer(200, "\r\n".join(lines).encode(), content_type="text/plain")

    return respond


@pytest.fixture
def server(tmp_path: Any) -> Iterator[tuple[Receiver, Any]]:
    with http_receiver(range_api({BREACHED: "3", "only-once-breached-pw": ""})) as receiver:

        def start(**password_config: Any) -> Any:
            config = make_config(
                dsn=f"sqlite:///{tmp_path}/{uuid.uuid4().hex}.db",
                selfservice={
                    "methods": {
                        "password": {
                            "config": {
                                "haveibeenpwned_enabled": True,
                                "haveibeenpwned_host": receiver.url,
                                **password_config,
                            }
                        }
                    }
                },
            )
            return live_sidecar(config)

        yield receiver, start


def register(live: LiveSidecar, password: str) -> httpx.Response:
    with httpx.Client(base_url=live.public_url) as client:
        flow = client.get("/self-service/registration/api").json()
        email = f"hibp-{uuid.uuid4().hex[:8]}@example.test"
        return client.post(
            f"/self-service/registration?flow={flow['id']}",
            json={"method": "password", "password": password, "traits": {"email": email}},
        )


def password_messages(response: httpx.Response) -> list[dict[str, Any]]:
    node = next(n for n in response.json()["ui"]["nodes"] if n["attributes"].get("name") == "password")
    return list(node["messages"])


def test_breached_password_is_refused_and_only_the_prefix_leaves(server: Any) -> None:
    receiver, start = server
    with start() as live:
        refused = register(live, BREACHED)
        assert refused.status_code == 400
        [message] = password_messages(refused)
        assert message["id"] == 4000034
        assert message["text"] == "The password has been found in data breaches and must no longer be used."
        assert message["context"] == {"breaches": 3}
        [asked] = receiver.received
        assert asked.method == "GET" and asked.path == f"/range/{_sha1(BREACHED)[:5]}"
        assert _sha1(BREACHED)[5:] not in str(asked)

        assert register(live, CLEAN).status_code == 200
        assert len(receiver.received) == 2
        # The answer is cached: the same password again asks nobody.
        assert register(live, BREACHED).status_code == 400
        assert len(receiver.received) == 2


def test_max_breaches_is_the_threshold(server: Any) -> None:
    _, start = server
    with start(max_breaches=3) as live:
        assert register(live, BREACHED).status_code == 200
    with start(max_breaches=0) as live:
        # A line without ":COUNT" counts as one breach (Kratos issue 2145).
        [message] = password_messages(register(live, "only-once-breached-pw"))
        assert message["context"] == {"breaches": 1}


def test_unreachable_api_is_ignored_by_default_and_fails_when_told(server: Any) -> None:
    receiver, start = server
    down = f"http://127.0.0.1:{free_port()}"
    with start(haveibeenpwned_host=down) as live:
        assert register(live, BREACHED).status_code == 200
    with start(haveibeenpwned_host=down, ignore_network_errors=False) as live:
        failed = register(live, BREACHED)
        assert failed.status_code == 502
        assert failed.json()["error"]["message"] == "Leaked password server unavailable"
    receiver.responder = lambda request: Answer(503)
    with start(ignore_network_errors=False) as live:
        assert register(live, BREACHED).status_code == 502


def test_settings_checks_the_new_password_too(server: Any) -> None:
    _, start = server
    with start() as live, httpx.Client(base_url=live.public_url) as client:
        email = f"hibp-{uuid.uuid4().hex[:8]}@example.test"
        flow = client.get("/self-service/registration/api").json()
        token = client.post(
            f"/self-service/registration?flow={flow['id']}",
            json={"method": "password", "password": CLEAN, "traits": {"email": email}},
        ).json()["session_token"]
        headers = {"X-Session-Token": token}
        settings = client.get("/self-service/settings/api", headers=headers).json()
        changed = client.post(
            f"/self-service/settings?flow={settings['id']}",
            json={"method": "password", "password": BREACHED},
            headers=headers,
        )
        assert changed.status_code == 400
        assert [m["id"] for m in password_messages(changed)] == [4000034]


def test_kratos_host_form_is_https() -> None:
    from sidecar.security.breaches import range_base_url

    assert range_base_url("api.pwnedpasswords.com") == "https://api.pwnedpasswords.com"
    assert range_base_url("http://127.0.0.1:8080/") == "http://127.0.0.1:8080"

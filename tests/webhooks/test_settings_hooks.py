"""Settings ``web_hook`` hooks with ``response.parse`` / ``can_interrupt`` through ``sidecar serve``
against a real local HTTP receiver.

Kratos v25.4.0 ``selfservice/flow/settings/hook.go`` (``PostSettingsHook``): the pre-persist hooks
(``selfservice/hook/web_hook.go`` ``ExecuteSettingsPrePersistHook``: only those with ``parse`` or
``can_interrupt``) see the identity *about to be saved* and run before ``IdentityManager().Update``;
a refusal goes through ``flow.HandleHookError``: the flow shown again with the hook's messages on
its fields, nothing saved. A ``parse`` answer's traits and metadata are saved with the change.
The other hooks (``ExecuteSettingsPostPersistHook``) run once the change is saved.
"""

from __future__ import annotations

import base64
import html
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.ops.serve import Proc, base_config, ports, running, serve_argv, write_config
from tests.receiver import Answer, Received, Receiver, http_receiver

PASSWORD = "correct-Horse-battery-staple-42"
NEW_PASSWORD = "another-Horse-battery-staple-43"
BODY = (
    "base64://"
    + base64.b64encode(
        b"function(ctx) { email: ctx.identity.traits.email, flow: ctx.flow.id, "
        b"metadata: ctx.identity.metadata_public }"
    ).decode()
)


def answer(request: Received) -> Answer:
    data = json.loads(request.body or b"{}")
    email = str(data.get("email", ""))
    if request.path == "/profile" and email.startswith("blocked"):
        found = {
            "messages": [
                {
                    "instance_ptr": "#/traits/email",
                    "messages": [{"id": 4711, "text": "This address is not welcome.", "type": "error"}],
                }
            ]
        }
        return Answer(400, json.dumps(found).encode())
    if request.path == "/profile":
        return Answer(200, json.dumps({"identity": {"metadata_public": {"reviewed": email}}}).encode())
    if request.path == "/password" and email.startswith("frozen"):
        found = {
            "messages": [
                {
                    "instance_ptr": "#/",
                    "messages": [{"id": 4712, "text": "Passwords are frozen.", "type": "error"}],
                }
            ]
        }
        return Answer(409, json.dumps(found).encode())
    return Answer(204)


def hook(receiver: Receiver, path: str, **config: Any) -> dict[str, Any]:
    return {
        "hook": "web_hook",
        "config": {"url": receiver.url + path, "method": "POST", "body": BODY, **config},
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proc, Receiver]]:
    tmp = tmp_path_factory.mktemp("settings-hooks")
    with http_receiver(answer) as receiver:
        public, admin = ports()
        config = base_config(tmp, public, admin)
        config["dev"] = True
        config["selfservice"]["flows"] = {
            "settings": {
                "after": {
                    "profile": {
                        "hooks": [
                            hook(receiver, "/profile", response={"parse": True}),
                            hook(receiver, "/profile-saved"),
                        ]
                    },
                    "password": {"hooks": [hook(receiver, "/password", can_interrupt=True)]},
                }
            }
        }
        path = write_config(tmp / "sidecar.yaml", config)
        with running(serve_argv(path), cwd=tmp, public_port=public, admin_port=admin) as proc:
            yield proc, receiver


def _register(proc: Proc, email: str) -> tuple[str, str]:
    with httpx.Client(base_url=proc.public_url + "/.auth", timeout=30) as c:
        flow = c.get("/self-service/registration/api").json()
        done = c.post(
            f"/self-service/registration?flow={flow['id']}",
            json={"method": "password", "password": PASSWORD, "traits": {"email": email}},
        )
        assert done.status_code == 200, done.text
        return done.json()["identity"]["id"], done.json()["session_token"]


def _settings(proc: Proc, token: str, body: dict[str, Any]) -> httpx.Response:
    with httpx.Client(base_url=proc.public_url + "/.auth", timeout=30) as c:
        headers = {"X-Session-Token": token}
        flow = c.get("/self-service/settings/api", headers=headers).json()
        return c.post(f"/self-service/settings?flow={flow['id']}", json=body, headers=headers)


def _identity(proc: Proc, identity_id: str) -> dict[str, Any]:
    return httpx.get(f"{proc.admin_url}/admin/identities/{identity_id}").json()  # type: ignore[no-any-return]


def _calls(receiver: Receiver, path: str, email: str) -> list[dict[str, Any]]:
    bodies = [json.loads(r.body) for r in list(receiver.received) if r.path == path]
    return [b for b in bodies if b.get("email") == email]


def test_a_parse_hook_refuses_a_profile_change_with_messages_on_the_field(
    server: tuple[Proc, Receiver],
) -> None:
    proc, receiver = server
    email = f"p-{uuid.uuid4().hex[:8]}@example.test"
    identity_id, token = _register(proc, email)
    blocked = f"blocked-{uuid.uuid4().hex[:8]}@example.test"
    refused = _settings(proc, token, {"method": "profile", "traits": {"email": blocked}})
    assert refused.status_code == 400, refused.text
    node = next(n for n in refused.json()["ui"]["nodes"] if n["attributes"]["name"] == "traits.email")
    assert node["messages"] == [{"id": 4711, "text": "This address is not welcome.", "type": "error"}]
    assert node["attributes"]["value"] == blocked  # the submitted value is kept for correction
    # The hook saw the identity about to be saved; nothing was saved; the later hook never ran.
    assert len(_calls(receiver, "/profile", blocked)) == 1
    assert _identity(proc, identity_id)["traits"]["email"] == email
    assert _calls(receiver, "/profile-saved", blocked) == []


def test_a_parse_hook_changes_metadata_with_the_profile_change(server: tuple[Proc, Receiver]) -> None:
    proc, receiver = server
    identity_id, token = _register(proc, f"q-{uuid.uuid4().hex[:8]}@example.test")
    new = f"r-{uuid.uuid4().hex[:8]}@example.test"
    done = _settings(proc, token, {"method": "profile", "traits": {"email": new}})
    assert done.status_code == 200, done.text
    assert done.json()["state"] == "success"
    stored = _identity(proc, identity_id)
    assert stored["traits"]["email"] == new
    assert stored["metadata_public"] == {"reviewed": new}
    # The post-persist hook ran after the save and saw the hook's metadata.
    [saved] = _calls(receiver, "/profile-saved", new)
    assert saved["metadata"] == {"reviewed": new}


def test_a_can_interrupt_hook_keeps_the_old_password(server: tuple[Proc, Receiver]) -> None:
    proc, receiver = server
    email = f"frozen-{uuid.uuid4().hex[:8]}@example.test"
    _, token = _register(proc, email)
    refused = _settings(proc, token, {"method": "password", "password": NEW_PASSWORD})
    assert refused.status_code == 400, refused.text
    assert refused.json()["ui"]["messages"] == [
        {"id": 4712, "text": "Passwords are frozen.", "type": "error"}
    ]
    assert len(_calls(receiver, "/password", email)) == 1
    with httpx.Client(base_url=proc.public_url + "/.auth", timeout=30) as c:
        for password, status in ((NEW_PASSWORD, 400), (PASSWORD, 200)):
            flow = c.get("/self-service/login/api").json()
            r = c.post(
                f"/self-service/login?flow={flow['id']}",
                json={"method": "password", "identifier": email, "password": password},
            )
            assert r.status_code == status, r.text
    # Another user's change passes the same hook.
    _, other = _register(proc, f"open-{uuid.uuid4().hex[:8]}@example.test")
    assert _settings(proc, other, {"method": "password", "password": NEW_PASSWORD}).status_code == 200


def test_the_built_in_page_shows_the_hook_message_on_the_field(server: tuple[Proc, Receiver]) -> None:
    proc, _ = server
    with httpx.Client(base_url=proc.public_url, timeout=30, follow_redirects=False) as c:
        page = c.get("/.auth/ui/registration", follow_redirects=True).text
        action, csrf = _form(page)
        email = f"b-{uuid.uuid4().hex[:8]}@example.test"
        form = {"csrf_token": csrf, "method": "password", "traits.email": email, "password": PASSWORD}
        assert c.post(action, data=form).status_code == 303
        page = c.get("/.auth/self-service/settings/browser", follow_redirects=True).text
        action, csrf = _form(page)
        blocked = f"blocked-{uuid.uuid4().hex[:8]}@example.test"
        r = c.post(action, data={"csrf_token": csrf, "method": "profile", "traits.email": blocked})
        assert r.status_code == 303, r.text
        shown = c.get(r.headers["location"], follow_redirects=True).text
        assert "This address is not welcome." in shown
        assert f'value="{blocked}"' in shown


def _form(page: str) -> tuple[str, str]:
    action = html.unescape(re.search(r'<form class="flow flow-\w+" action="([^"]+)"', page).group(1))  # type: ignore[union-attr]
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)  # type: ignore[union-attr]
    return action, html.unescape(csrf)

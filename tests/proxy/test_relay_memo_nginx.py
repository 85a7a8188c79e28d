"""Remembered relays behind a real nginx that gives every request its own id
(``proxy_set_header X-Request-ID $request_id``, as the README's production section runs it), in
front of a real ``sidecar serve`` and a recording upstream, over sockets.

The in-process differential tests (tests/proxy/test_relay_memo.py) show a remembered relay sends
the bytes the full path sends; this shows ``sidecar serve`` behind nginx keeps each request's id
end to end while the same signed-in GET repeats (from the third on, relayed from the listener's
memo): the id nginx made (which it also hands the client as X-Nginx-Request-ID) is the one the
upstream gets, the one the client gets back and the one in the access line, a new one every
request. (Fails when the remembered relay sends an id of its own: the log deciding a new one and
the relay not checking the decision.)
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from sidecar.config.loader import deep_merge
from tests.ops.probes import Recorder, api, login, raw_request, recording_upstream, register
from tests.ops.serve import migrate, ports, proxied_config, running, serve_argv, write_config
from tests.proxy.harness import nginx_server

RULES = """version: 1
rules:
  - {id: members, match: {paths: ["/private/**"]}, require: authenticated}
"""
EMAIL, PASSWORD = "relay-nginx@example.com", "Relay-behind-nginx-4-argon2!"
_ID = re.compile(r"[0-9a-f]{32}")
REPEATS = 12


def test_behind_nginx_each_repeated_request_keeps_nginx_s_own_id(tmp_path: Path) -> None:
    with recording_upstream() as upstream:
        public_port, admin_port = ports()
        config = deep_merge(
            proxied_config(tmp_path, public_port, admin_port, upstream.port, RULES),
            {"serve": {"public": {"trusted_proxies": ["127.0.0.1/32"]}}},
        )
        path = write_config(tmp_path / "sidecar.yaml", config)
        migrate(path, tmp_path)
        with running(serve_argv(path), cwd=tmp_path, public_port=public_port, admin_port=admin_port) as proc:
            with api(proc) as client:
                assert register(client, EMAIL, PASSWORD).status_code == 200
                answer = login(client, EMAIL, PASSWORD)
                assert answer.status_code == 200, answer.text
                token = answer.json()["session_token"]
            front = (
                f"    location / {{\n      proxy_pass http://127.0.0.1:{public_port};\n"
                '      proxy_http_version 1.1;\n      proxy_set_header Connection "";\n'
                "      proxy_set_header X-Request-ID $request_id;\n"
                "      add_header X-Nginx-Request-ID $request_id;\n    }"
            )
            with nginx_server(tmp_path, front) as nginx:
                ids = [_ask(nginx.port, token, upstream) for _ in range(REPEATS)]
            assert len(set(ids)) == REPEATS and all(_ID.fullmatch(i) for i in ids)
            assert proc.terminate() == 0  # every access line written
        lines = [json.loads(line) for line in proc.log().splitlines() if '"sidecar.access"' in line]
        logged = [line["request_id"] for line in lines if line.get("path") == "/private/x"]
        assert logged == ids


def _ask(port: int, token: str, upstream: Recorder) -> str:
    """One signed-in GET through nginx; the id nginx gave it, the same upstream and back."""
    seen = len(upstream.seen)
    answer = raw_request(port, f"GET /private/x HTTP/1.1\r\nX-Session-Token: {token}".encode())
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
    back = re.search(rb"(?im)^x-request-id: ([^\r]*)\r$", answer)
    made = re.search(rb"(?im)^x-nginx-request-id: ([^\r]*)\r$", answer)
    assert back is not None and made is not None, answer[:400]
    assert back.group(1) == made.group(1)
    assert len(upstream.seen) == seen + 1
    sent = [v for k, v in upstream.seen[-1][1] if k == "x-request-id"]
    assert sent == [back.group(1)]
    return back.group(1).decode()

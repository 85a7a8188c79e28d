"""The audit log itself: a closed set of events and fields, one line per event, off means nothing."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sidecar.audit import EVENTS, AuditLog, RequestOrigin

ORIGIN = RequestOrigin(ip="192.0.2.1", user_agent="ua\nforged", request_id="r1", trace_id="t1")


def fixed() -> datetime:
    return datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


def test_an_event_is_one_json_line_with_who_and_where(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(str(path), clock=fixed)
    who = uuid.uuid4()
    log.emit("logout", ORIGIN, identity_id=who, session_id=uuid.UUID(int=7))
    log.emit("mfa.removed", None, identity_id=str(who), method="totp")
    log.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first == {
        "time": "2026-01-02T03:04:05.678+00:00",
        "event": "logout",
        "version": 1,
        "service": "sidecar",
        "identity_id": str(who),
        "client_ip": "192.0.2.1",
        "user_agent": "ua\nforged",
        "request_id": "r1",
        "trace_id": "t1",
        "session_id": str(uuid.UUID(int=7)),
    }
    assert "\\n" in lines[0]  # the user agent's newline is escaped: it cannot forge a second line
    second = json.loads(lines[1])
    assert second["client_ip"] is None and second["flow_id"] is None and second["method"] == "totp"


def test_unknown_events_and_fields_are_refused_even_when_off(tmp_path: Path) -> None:
    for log in (AuditLog(None), AuditLog(str(tmp_path / "a.jsonl"))):
        with pytest.raises(ValueError, match="unknown audit event"):
            log.emit("login.maybe", ORIGIN)
        with pytest.raises(ValueError, match="password"):
            log.emit("login.failed", ORIGIN, password="hunter2")
    assert not (tmp_path / "a.jsonl").exists()


def test_off_writes_nothing_and_opens_nothing(tmp_path: Path) -> None:
    log = AuditLog.off()
    log.open()
    log.emit("logout", ORIGIN, identity_id="x")
    assert not log.enabled and list(tmp_path.iterdir()) == []


def test_a_path_that_cannot_be_opened_fails_at_open(tmp_path: Path) -> None:
    log = AuditLog(str(tmp_path / "missing-dir" / "audit.jsonl"))
    with pytest.raises(FileNotFoundError):
        log.open()


def test_no_event_field_names_a_secret() -> None:
    banned = ("password", "token", "cookie", "code", "secret", "key")
    for name, spec in EVENTS.items():
        for field in spec.fields:
            if field == "status_code":  # an HTTP status, not a one-time code
                continue
            assert not any(b in field for b in banned), (name, field)

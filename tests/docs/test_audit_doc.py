"""docs/AUDIT.md's table of events is the one ``sidecar.audit.EVENTS`` enforces."""

from __future__ import annotations

import json
import re
from pathlib import Path

from sidecar.audit import EVENTS

DOC = Path(__file__).resolve().parents[2] / "docs" / "AUDIT.md"
ROW = re.compile(r"^\| `([a-z._]+)` \| ((?:`[a-z_]+`(?:, )?)*) \| (.+) \|$", re.M)


def test_the_events_table_matches_the_code() -> None:
    rows = {
        m.group(1): (tuple(re.findall(r"`([a-z_]+)`", m.group(2))), m.group(3))
        for m in ROW.finditer(DOC.read_text())
    }
    assert rows == {name: (spec.fields, spec.description) for name, spec in EVENTS.items()}


def test_the_examples_have_the_documented_shape() -> None:
    text = DOC.read_text()
    block = text.split("```text", 1)[1].split("```", 1)[0]
    common = [
        "time",
        "event",
        "version",
        "service",
        "identity_id",
        "client_ip",
        "user_agent",
        "request_id",
        "trace_id",
    ]
    for line in block.strip().splitlines():
        event = json.loads(line)
        assert list(event) == [*common, *EVENTS[event["event"]].fields]

"""The records a decision makes (metrics, the access line's route class, the response's request id),
kept as they were when made by shorter ways for the session-cache miss (issue 15)."""

from __future__ import annotations

import time
from functools import partial
from types import SimpleNamespace
from typing import Any, cast

from sidecar.logs import AccessLog, public_route_classifier
from sidecar.metrics import Metrics
from sidecar.proxy.access import Access, Outcome
from sidecar.rules.decision import Verdict
from sidecar.waiting import Shared, later
from tests.conftest import make_config


def _decision_lines(text: bytes) -> list[bytes]:
    # The sum holds the measured time: not comparable between two runs.
    return [
        line
        for line in text.splitlines()
        if line.startswith(
            (
                b"sidecar_decisions_total",
                b"sidecar_decision_seconds_bucket",
                b"sidecar_decision_seconds_count",
            )
        )
    ]


async def test_a_decision_is_counted_as_observe_decision_counts_it() -> None:
    """``Access._record`` through its kept counters gives the exposition ``observe_decision``
    gives: per rule and decision, and the histogram's buckets. Fails on a kept counter keyed on the
    rule alone, or one that skips the histogram."""
    kept, reference = Metrics(), Metrics()
    access = Access(make_config(), cast(Any, None), cast(Any, None), kept)
    asked = [("a", Verdict.ALLOW), ("a", Verdict.LOGIN), ("b", Verdict.ALLOW), (None, Verdict.FORBIDDEN)] * 3
    for rule_id, verdict in asked:
        rule = SimpleNamespace(id=rule_id) if rule_id is not None else None
        outcome = Outcome(verdict, cast(Any, rule), None, True, "")
        # 3 ms ago: the 5 ms bucket, with 2 ms to spare.
        access._record(outcome, "/x", time.perf_counter() - 0.003, {})
        reference.observe_decision(rule_id or "-", verdict.value, 0.003)
    assert _decision_lines((await kept.render())[0]) == _decision_lines((await reference.render())[0])
    assert _decision_lines((await kept.render())[0])


def test_the_route_class_of_a_line_is_the_classifier_s_and_its_memo_stays_bounded() -> None:
    lines: list[str] = []
    classify = public_route_classifier("/.auth")
    log = AccessLog(None, listener="public", trusted=lambda p: False, write=lines.append, classify=classify)
    paths = [
        "/.auth/authz/nginx",
        "/.auth/decisions",
        "/.auth/decisions/x",
        "/.auth",
        "/x",
        "/.auth/health/ready",
    ]
    for i in range(3000):
        path = paths[i % len(paths)] if i < 60 else f"/p/{i}"
        log._finish({"type": "http", "method": "GET", "path": path}, 200, 0, 0.001, "r")
        assert f'"route_class":"{classify(path)}"' in lines[-1]
    assert len(log._classes) <= 1024  # client-chosen paths cannot grow it without bound


def _own_id(own: bytes, scope: Any) -> Any:
    return 200, [(b"a", b"1"), (own, b"theirs")], b""


async def test_an_answer_with_its_own_request_id_in_any_case_gets_no_second_one() -> None:
    """``AccessLog.answering`` adds our x-request-id unless the answer has one, whatever its case.
    Fails on a check of the names as they are (no lower-casing)."""
    log = AccessLog(None, listener="public", trusted=lambda p: False, write=lambda line: None)
    for own in (b"x-request-id", b"X-Request-ID"):
        answer = log.answering(partial(_own_id, own))
        scope: dict[str, Any] = {"type": "http", "method": "GET", "path": "/x", "headers": [], "client": None}
        _, headers, _ = cast(Any, answer(scope))
        assert [n for n, _ in headers].count(own) == 1 and len(headers) == 2
    answer = log.answering(lambda scope: (200, [(b"a", b"1")], b""))
    scope = {"type": "http", "method": "GET", "path": "/x", "headers": [], "client": None}
    _, headers, _ = cast(Any, answer(scope))
    assert headers[-1] == (b"x-request-id", scope["sidecar.request_id"].encode())
    # An answer that needed I/O first (``AccessLog._later``): the same.
    for own in (b"x-request-id", b"X-Request-ID"):
        shared: Shared[None] = Shared()

        def waiting(scope: Any, own: bytes = own) -> Any:
            return later(shared, partial(_own_id, own, scope))

        answer = log.answering(waiting)
        scope = {"type": "http", "method": "GET", "path": "/x", "headers": [], "client": None}
        _, headers, _ = cast(Any, answer(scope)).make()
        assert [n for n, _ in headers].count(own) == 1 and len(headers) == 2

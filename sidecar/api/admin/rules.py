"""``GET /admin/rules/coverage``: how often each access rule decided a request since start.

The counts come from the ``sidecar_rule_matches`` metric, so with several workers they are the
sum over all of them, as ``/metrics`` is (each worker folds its counts in every few seconds).
Rules of the current set that never matched are listed apart: a rule no traffic reaches is
either dead weight or a sign that an earlier rule takes its requests.
"""

from __future__ import annotations

from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sidecar.api.respond import json_response
from sidecar.metrics import Metrics
from sidecar.rules.holder import RulesHolder


def rules_coverage_routes(rules: RulesHolder, metrics: Metrics) -> list[Route]:
    started = datetime.now(UTC)

    async def coverage(request: Request) -> Response:
        counts = await metrics.rule_matches()
        current = rules.current
        listed = [{"id": r.id, "source": r.source, "matches": counts.get(r.id, 0)} for r in current.rules]
        ids = {r.id for r in current.rules}
        return json_response(
            {
                "since": started.isoformat().replace("+00:00", "Z"),
                "rules_order": current.order,
                "rules": listed,
                "never_matched": [r["id"] for r in listed if not r["matches"]],
                # Rules a reload removed, with what they matched while they were live.
                "removed": {k: v for k, v in sorted(counts.items()) if k not in ids and v},
            }
        )

    return [Route("/admin/rules/coverage", coverage, methods=["GET"])]

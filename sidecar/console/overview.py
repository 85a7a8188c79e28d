"""``/console``: counts and small charts drawn from the same numbers ``/metrics`` serves.

The charts are inline SVG bars built on the server (no script, nothing fetched): access decisions by
outcome, self-service sign-ins by result, the courier queue by status, session-cache hits. With
several workers the metrics are the merged, fleet-wide ones (``Metrics.render``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families
from starlette.requests import Request
from starlette.responses import Response

from sidecar.console.auth import ConsoleSession
from sidecar.console.pages import Pages
from sidecar.courier.store import CourierStore
from sidecar.i18n import N_, Phrase
from sidecar.identity.store import IdentityStore
from sidecar.metrics import Metrics

BAR_HEIGHT = 22
CHART_WIDTH = 300
LABEL_WIDTH = 110


# The words for the metrics' label values; others (status codes, ``error_404``) are shown as they are.
_BAR_LABELS = {
    "allow": N_("allow"),
    "success": N_("success"),
    "shown": N_("shown again"),
    "expired": N_("expired"),
    "already_signed_in": N_("already signed in"),
    "rate_limited": N_("rate limited"),
    "other": N_("other"),
    "queued": N_("queued"),
    "processing": N_("processing"),
    "sent": N_("sent"),
    "abandoned": N_("abandoned"),
    "hit": N_("hit"),
    "miss": N_("miss"),
}


@dataclass(frozen=True, slots=True)
class Bar:
    key: str
    """The metric's label value (``allow``, ``403``, ``hit``)."""
    label: str | Phrase
    value: int
    y: int
    width: int


@dataclass(frozen=True, slots=True)
class Chart:
    id: str
    title: str | Phrase
    bars: tuple[Bar, ...]
    height: int
    total: int


def chart(chart_id: str, title: str | Phrase, values: Mapping[str, float]) -> Chart:
    """Horizontal bars scaled to the largest value (a zero chart has no bars, and says so)."""
    items = [(k, int(v)) for k, v in values.items()]
    top = max((v for _, v in items), default=0)
    span = CHART_WIDTH - LABEL_WIDTH - 50
    bars = tuple(
        Bar(
            key,
            Phrase(_BAR_LABELS[key]) if key in _BAR_LABELS else key,
            value,
            i * BAR_HEIGHT,
            round(span * value / top) if top else 0,
        )
        for i, (key, value) in enumerate(items)
    )
    return Chart(chart_id, title, bars, max(len(bars), 1) * BAR_HEIGHT, sum(v for _, v in items))


def _sum_by(
    samples: Iterable[tuple[str, dict[str, str], float]], name: str, label: str, **where: str
) -> dict[str, float]:
    out: dict[str, float] = {}
    for sample_name, labels, value in samples:
        if sample_name != name or any(labels.get(k) != v for k, v in where.items()):
            continue
        key = labels.get(label, "")
        out[key] = out.get(key, 0.0) + value
    return out


class Overview:
    def __init__(
        self, pages: Pages, identities: IdentityStore, courier: CourierStore, metrics: Metrics
    ) -> None:
        self.pages = pages
        self.identities = identities
        self.courier = courier
        self.metrics = metrics

    async def show(self, request: Request, signed_in: ConsoleSession) -> Response:
        body, _ = await self.metrics.render()
        samples = [
            (s.name, dict(s.labels), float(s.value))
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples
        ]
        courier = await self.courier.count_by_status()
        decisions = _sum_by(samples, "sidecar_decisions_total", "decision")
        logins = _sum_by(samples, "sidecar_flow_submissions_total", "result", flow="login")
        cache = _sum_by(samples, "sidecar_session_cache_total", "result")
        charts = [
            chart("decisions", Phrase(N_("Access decisions by outcome")), dict(sorted(decisions.items()))),
            chart("logins", Phrase(N_("Sign-ins by result")), dict(sorted(logins.items()))),
            chart(
                "courier",
                Phrase(N_("Courier messages by status")),
                {k: float(v) for k, v in courier.items()},
            ),
            chart("cache", Phrase(N_("Session cache lookups")), dict(sorted(cache.items()))),
        ]
        context = {
            "title": Phrase(N_("Overview")),
            "identity_count": await self.identities.count(),
            "courier_waiting": courier.get("queued", 0) + courier.get("processing", 0),
            "courier_abandoned": courier.get("abandoned", 0),
            "decision_count": int(sum(decisions.values())),
            "charts": charts,
            "label_width": LABEL_WIDTH,
            "chart_width": CHART_WIDTH,
            "bar_height": BAR_HEIGHT,
        }
        return self.pages.render("overview.html", context, signed_in=signed_in, section="overview")

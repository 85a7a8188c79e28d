"""Prometheus metrics, served on the admin listener at ``/metrics``.

One ``Metrics`` object is built in ``app.build_services`` and handed to whoever records; nothing
registers at import time. The recording methods are the hot path's: each is a dict lookup or two
and a plain integer add into a ``_Tally`` (or a ``_Buckets``) of this process, with no lock and no
label formatting. ``fold`` adds what the tallies counted since the last fold into
prometheus-client's values; every scrape folds first, so a scrape of one process is exact.

With ``sidecar serve --workers N`` (N > 1) the parent sets ``PROMETHEUS_MULTIPROC_DIR`` before
spawning the workers; prometheus-client then keeps every value in per-process mmap files, and the
worker that answers a scrape merges them all (prometheus-client's multi-process mode). There each
update of a value is a locked write into the mmap (0.7 µs, three or four per request), which is why
requests only count in process: every worker folds every ``FOLD_INTERVAL`` (``run_refresher``), so
a scrape shows the other workers' counts as of their last fold (at most a second old) and the
answering worker's own up to the moment. Gauges sampled from callbacks are refreshed at scrape time
in the answering process, and every ``refresh_interval`` in each worker, because a scrape reaches
only one worker.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
    values,
)
from prometheus_client.multiprocess import MultiProcessCollector

log = logging.getLogger("sidecar.metrics")

# Decisions are in-process work (a rule match and usually a cache hit): sub-millisecond buckets.
DECISION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
# A SAML signature check runs xmlsec1 child processes: ~0.1 s each, seconds on a loaded machine.
SAML_CHECK_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# A young collection takes tens of µs, a full one of the start-up heap (not frozen) 100-200 ms.
GC_PAUSE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
UPSTREAM_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


FOLD_INTERVAL = 1.0
"""Seconds between two folds of a worker's tallies into the shared values (multi-process mode)."""


class _Tally:
    """One label child's count in this process: ``n`` grows per request, ``fold`` moves it on."""

    __slots__ = ("child", "folded", "n")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.n = 0
        self.folded = 0

    def fold(self) -> None:
        n = self.n
        if n != self.folded:
            self.child.inc(n - self.folded)
            self.folded = n


class _Buckets:
    """A histogram's observations in this process: a count per bucket and the sum.

    ``fold`` adds them to the histogram's own bucket and sum values: prometheus-client has no
    public call to add many observations at once, so this uses its ``_buckets`` and ``_sum``
    (there since its first releases; ``tests/ops/test_metrics.py`` renders them)."""

    __slots__ = ("bounds", "counts", "folded", "folded_sum", "histogram", "sum")

    def __init__(self, histogram: Histogram, buckets: tuple[float, ...]) -> None:
        self.histogram = histogram
        self.bounds = (*buckets, float("inf"))  # prometheus-client adds +Inf the same way
        self.counts = [0] * len(self.bounds)
        self.folded = [0] * len(self.bounds)
        self.sum = 0.0
        self.folded_sum = 0.0

    def observe(self, seconds: float) -> None:
        # The first bucket whose upper bound is >= the value, as ``Histogram.observe`` picks.
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds

    def fold(self) -> None:
        values = self.histogram._buckets  # see the class docstring
        for i, n in enumerate(self.counts):
            if n != self.folded[i]:
                values[i].inc(n - self.folded[i])
                self.folded[i] = n
        total = self.sum
        if total != self.folded_sum:
            self.histogram._sum.inc(total - self.folded_sum)
            self.folded_sum = total


class JsonnetCounts(Protocol):
    """What the metrics read of the Jsonnet pool (``security.jsonnet.JsonnetSandbox``)."""

    @property
    def queue_depth(self) -> int: ...

    @property
    def outcomes(self) -> Mapping[str, int]: ...

    @property
    def replacements(self) -> int: ...


def multiprocess_enabled() -> bool:
    """True when prometheus-client was imported with ``PROMETHEUS_MULTIPROC_DIR`` set."""
    return values.ValueClass is not values.MutexValue


class Metrics:
    """Every sidecar metric, bound to a registry of its own (never the global default one).

    Label values must come from bounded sets (rule ids from config, route classes, flow names,
    HTTP statuses, short error kinds): each distinct combination is a time series forever.
    """

    def __init__(
        self,
        *,
        refresh_interval: float = 5.0,
        hashing_queue: Callable[[], int] | None = None,
        courier_queue: Callable[[], Awaitable[int]] | None = None,
        rule_matches: Callable[[], dict[str, int]] | None = None,
        saml_queue: Callable[[], int] | None = None,
        jsonnet: JsonnetCounts | None = None,
    ) -> None:
        """``hashing_queue`` returns this process's hashing queue (``lambda: hasher.queue_depth``),
        ``saml_queue`` its SAML signature checks waiting for a slot;
        ``courier_queue`` counts queued courier messages (one cheap SQL count, run at scrape time);
        ``rule_matches`` returns this process's matches per rule id since start (``RulesHolder``);
        ``jsonnet`` is this process's Jsonnet pool, its counts since start."""
        self.multiprocess = multiprocess_enabled()
        self.refresh_interval = refresh_interval
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self._requests = Counter(
            "sidecar_requests",
            "HTTP requests by route class and status",
            ["route_class", "status"],
            registry=r,
        )
        self._decisions = Counter(
            "sidecar_decisions", "Access decisions by rule and outcome", ["rule", "decision"], registry=r
        )
        self._decision_seconds = Histogram(
            "sidecar_decision_seconds", "Time to decide a request", buckets=DECISION_BUCKETS, registry=r
        )
        self._session_cache = Counter(
            "sidecar_session_cache", "Session cache lookups by result (hit, miss)", ["result"], registry=r
        )
        self._upstream_seconds = Histogram(
            "sidecar_upstream_seconds",
            "Time spent on an upstream exchange, body streaming included",
            buckets=UPSTREAM_BUCKETS,
            registry=r,
        )
        self._upstream_errors = Counter(
            "sidecar_upstream_errors", "Upstream failures by kind", ["error"], registry=r
        )
        self._flows = Counter(
            "sidecar_flow_submissions",
            "Self-service flow submissions by flow, method and result",
            ["flow", "method", "result"],
            registry=r,
        )
        # The courier queue lives in the shared database: any worker's latest sample is the truth.
        self._courier_queue = Gauge(
            "sidecar_courier_queue_depth",
            "Courier messages waiting to be sent",
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        # A store is down for the fleet when any live worker cannot reach it: the minimum.
        self._store_up = Gauge(
            "sidecar_store_up",
            "1 when the last check of the store (database, redis) succeeded, else 0",
            ["store"],
            registry=r,
            multiprocess_mode="livemin",
        )
        # Each worker has its own hashing pool: the fleet-wide queue is the sum over live workers.
        self._hashing_queue = Gauge(
            "sidecar_hashing_queue_depth",
            "Password hashes waiting for a free hashing slot",
            registry=r,
            multiprocess_mode="livesum",
        )
        # The SAML service provider's gate (strategies.saml.acs): every identity provider message's
        # fate, the time of each signature check, and the checks waiting for a slot.
        self._saml_messages = Counter(
            "sidecar_saml_verifications",
            "SAML messages (response, logout_request) by outcome: ok, a refusal reason "
            "(signature, audience, destination, expired, replay, inresponseto, unsigned, malformed, "
            "too_large, other), busy (503) or rate_limited (429)",
            ["message", "outcome"],
            registry=r,
        )
        self._saml_check_seconds = Histogram(
            "sidecar_saml_verification_seconds",
            "Time of one SAML signature check (xmlsec1), the wait for a slot not included",
            buckets=SAML_CHECK_BUCKETS,
            registry=r,
        )
        self._saml_queue = Gauge(
            "sidecar_saml_verification_queue_depth",
            "SAML signature checks waiting for a free slot",
            registry=r,
            multiprocess_mode="livesum",
        )
        # The Jsonnet pool (security.jsonnet): plain counts of its own, synced at scrape time.
        self._jsonnet_evaluations = Counter(
            "sidecar_jsonnet_evaluations",
            "Jsonnet evaluations (web hook and courier bodies, claims mappers, tokenizer) by outcome: "
            "ok, error (the snippet's), timeout (CPU deadline), crashed (memory cap, killed), busy (503)",
            ["outcome"],
            registry=r,
        )
        self._jsonnet_replacements = Counter(
            "sidecar_jsonnet_worker_replacements",
            "Jsonnet worker processes ended and replaced (timeout, crash, memory cap, killed)",
            registry=r,
        )
        self._jsonnet_queue = Gauge(
            "sidecar_jsonnet_queue_depth",
            "Jsonnet evaluations waiting for a free worker",
            registry=r,
            multiprocess_mode="livesum",
        )
        self._jsonnet_source = jsonnet
        self._jsonnet_synced: dict[str, int] = {}
        # Filled from the rules' plain per-rule counters at scrape time (``rule_matches``),
        # so the hot path never touches a label child for it.
        self._rule_matches = Counter(
            "sidecar_rule_matches", "Requests each access rule decided, since start", ["rule"], registry=r
        )
        self._rule_source = rule_matches
        self._rule_synced: dict[str, int] = {}
        # The collector's pauses stop the event loop: every request in flight waits them out.
        self._gc_pause = Histogram(
            "sidecar_gc_pause_seconds",
            "Time each garbage collection stopped the process, by generation (0, 1, 2 = full)",
            ["generation"],
            buckets=GC_PAUSE_BUCKETS,
            registry=r,
        )
        # One sample per worker: what ``gc.freeze`` took out of the collector's reach at start-up.
        self._gc_frozen = Gauge(
            "sidecar_gc_frozen_objects",
            "Objects of the start-up heap the garbage collector no longer scans (gc.freeze)",
            registry=r,
            multiprocess_mode="liveall",
        )
        if not self.multiprocess:
            ProcessCollector(registry=r)  # not supported in multi-process mode
        # Hot-path counts of this process (see the module docstring), folded by ``fold``.
        self._tallies: list[_Tally | _Buckets] = []
        self._request_tallies: dict[str, dict[int, _Tally]] = {}
        self._decision_tallies: dict[str, dict[str, _Tally]] = {}
        self._children: dict[tuple[Any, ...], _Tally] = {}
        self._hit = self._tally(self._session_cache.labels("hit"))
        self._miss = self._tally(self._session_cache.labels("miss"))
        self._decision_buckets = self._buckets(self._decision_seconds, DECISION_BUCKETS)
        self._upstream_buckets = self._buckets(self._upstream_seconds, UPSTREAM_BUCKETS)
        self._saml_check_buckets = self._buckets(self._saml_check_seconds, SAML_CHECK_BUCKETS)
        self._gc_buckets = tuple(
            self._buckets(self._gc_pause.labels(str(generation)), GC_PAUSE_BUCKETS) for generation in range(3)
        )
        self._gc_started = 0.0
        self._hashing_source = hashing_queue
        self._saml_source = saml_queue
        self._courier_source = courier_queue

    def _tally(self, child: Any) -> _Tally:
        tally = _Tally(child)
        self._tallies.append(tally)
        return tally

    def _buckets(self, histogram: Histogram, buckets: tuple[float, ...]) -> _Buckets:
        tally = _Buckets(histogram, buckets)
        self._tallies.append(tally)
        return tally

    def fold(self) -> None:
        """Add what this process counted since the last fold into prometheus-client's values."""
        for tally in self._tallies:
            tally.fold()

    # --- hot path: called per request; plain counts, no lock, no string formatting ------------

    def request(self, route_class: str, status: int) -> None:
        by_status = self._request_tallies.get(route_class)
        tally = by_status.get(status) if by_status is not None else None
        if tally is None:
            tally = self._request_tally(route_class, status)
        tally.n += 1

    def _request_tally(self, route_class: str, status: int) -> _Tally:
        by_status = self._request_tallies.setdefault(route_class, {})
        tally = by_status.get(status)
        if tally is None:
            tally = by_status[status] = self._tally(self._requests.labels(route_class, str(status)))
        return tally

    def request_counter(self, route_class: str, status: int) -> Callable[[], None]:
        """``request`` bound to one route class and status, for whoever counts the same pair again
        and again (a remembered answer, ``sidecar.http_protocol``): the same count, no lookups."""
        tally = self._request_tally(route_class, status)

        def count() -> None:
            tally.n += 1

        return count

    def observe_decision(self, rule_id: str, decision: str, seconds: float) -> None:
        by_decision = self._decision_tallies.get(rule_id)
        tally = by_decision.get(decision) if by_decision is not None else None
        if tally is None:
            tally = self._decision_tally(rule_id, decision)
        tally.n += 1
        self._decision_buckets.observe(seconds)

    def _decision_tally(self, rule_id: str, decision: str) -> _Tally:
        by_decision = self._decision_tallies.setdefault(rule_id, {})
        tally = by_decision.get(decision)
        if tally is None:
            tally = by_decision[decision] = self._tally(self._decisions.labels(rule_id, decision))
        return tally

    def decision_counter(self, rule_id: str, decision: str) -> Callable[[float], None]:
        """``observe_decision`` bound to one rule and decision (as ``request_counter``)."""
        tally = self._decision_tally(rule_id, decision)
        buckets = self._decision_buckets
        counts, bounds = buckets.counts, buckets.bounds

        def observe(seconds: float) -> None:
            tally.n += 1
            # ``_Buckets.observe``, inlined.
            counts[bisect.bisect_left(bounds, seconds)] += 1
            buckets.sum += seconds

        return observe

    def session_cache(self, hit: bool) -> None:
        (self._hit if hit else self._miss).n += 1

    def upstream_observer(self) -> Callable[[float], None]:
        """``observe_upstream`` of a success, bound (for the fast relay: one call less a request)."""
        return self._upstream_buckets.observe

    def observe_upstream(self, seconds: float, error: str | None = None) -> None:
        """``error`` is a short kind (``connect``, ``timeout``, ``reset``), or None on success."""
        self._upstream_buckets.observe(seconds)
        if error is not None:
            key = ("u", error)
            tally = self._children.get(key)
            if tally is None:
                tally = self._children[key] = self._tally(self._upstream_errors.labels(error))
            tally.n += 1

    def flow_submission(self, flow: str, method: str, result: str) -> None:
        key = ("f", flow, method, result)
        tally = self._children.get(key)
        if tally is None:
            tally = self._children[key] = self._tally(self._flows.labels(flow, method, result))
        tally.n += 1

    def saml_message(self, message: str, outcome: str) -> None:
        """An identity provider's ``response`` or ``logout_request`` and what became of it."""
        key = ("s", message, outcome)
        tally = self._children.get(key)
        if tally is None:
            tally = self._children[key] = self._tally(self._saml_messages.labels(message, outcome))
        tally.n += 1

    def observe_saml_check(self, seconds: float) -> None:
        self._saml_check_buckets.observe(seconds)

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        """A ``gc.callbacks`` entry (``sidecar.server`` adds it in each worker): the pause of every
        collection into ``sidecar_gc_pause_seconds``. Called at the start and the stop of each,
        ~20 times a second under load; two clock reads and a bucket count."""
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self._gc_buckets[info["generation"]].observe(time.perf_counter() - self._gc_started)

    def heap_frozen(self, objects: int) -> None:
        """The worker's ``gc.get_freeze_count()`` after its start-up (``sidecar.server``)."""
        self._gc_frozen.set(objects)

    def store_up(self, store: str, up: bool) -> None:
        """The store monitor's verdict after each check (every few seconds, per worker)."""
        self._store_up.labels(store).set(1 if up else 0)

    # --- gauges sampled from their owners ----------------------------------------------------

    def _sync_rule_matches(self) -> None:
        if self._rule_source is None:
            return
        for rule_id, count in self._rule_source().items():
            synced = self._rule_synced.get(rule_id)
            if synced is None or count > synced:
                # A zero child is created too: never-matched rules show up as 0.
                self._rule_matches.labels(rule_id).inc(count - (synced or 0))
                self._rule_synced[rule_id] = count

    def _sync_jsonnet(self) -> None:
        pool = self._jsonnet_source
        if pool is None:
            return
        self._jsonnet_queue.set(pool.queue_depth)
        counts = {**pool.outcomes, "replacements": pool.replacements}
        for key, count in counts.items():
            synced = self._jsonnet_synced.get(key)
            if synced is None or count > synced:
                # Zero children too: every outcome shows up from the first scrape.
                if key == "replacements":
                    self._jsonnet_replacements.inc(count - (synced or 0))
                else:
                    self._jsonnet_evaluations.labels(key).inc(count - (synced or 0))
                self._jsonnet_synced[key] = count

    def refresh_local(self) -> None:
        self.fold()
        self._sync_jsonnet()
        if self._hashing_source is not None:
            self._hashing_queue.set(self._hashing_source())
        if self._saml_source is not None:
            self._saml_queue.set(self._saml_source())
        self._sync_rule_matches()

    async def rule_matches(self) -> dict[str, int]:
        """Matches per rule id since start, summed over every worker in multi-process mode
        (each worker folds its own counts in every ``refresh_interval`` and at its scrapes)."""
        self.refresh_local()

        def read() -> dict[str, int]:
            registry = self.registry
            if self.multiprocess:
                registry = CollectorRegistry()
                MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            counts: dict[str, int] = {}
            for family in registry.collect():
                if family.name == "sidecar_rule_matches":
                    for sample in family.samples:
                        if sample.name == "sidecar_rule_matches_total":
                            rule = sample.labels["rule"]
                            counts[rule] = counts.get(rule, 0) + int(sample.value)
            return counts

        return await asyncio.to_thread(read) if self.multiprocess else read()

    async def refresh(self) -> None:
        """Sample every gauge source; a failing source keeps its last value and is logged."""
        self.refresh_local()
        if self._courier_source is not None:
            try:
                self._courier_queue.set(await asyncio.wait_for(self._courier_source(), timeout=2))
            except Exception as exc:  # a store outage must not break the scrape of everything else
                log.warning("courier queue depth unavailable: %s", exc)

    async def run_refresher(self) -> None:
        """Keep this worker's counts and local gauges current for scrapes answered by other
        workers: a fold every ``FOLD_INTERVAL``, the gauges every ``refresh_interval``."""
        refreshed = 0.0
        while True:
            with contextlib.suppress(Exception):
                now = time.monotonic()
                if now - refreshed >= self.refresh_interval:
                    refreshed = now
                    self.refresh_local()  # folds too
                else:
                    self.fold()
            await asyncio.sleep(min(FOLD_INTERVAL, self.refresh_interval))

    async def aclose(self) -> None:
        """The last fold, at shutdown: a stopping worker's final counts reach the shared files."""
        self.fold()

    async def render(self) -> tuple[bytes, str]:
        """The exposition text and its content type; merges every worker in multi-process mode."""
        await self.refresh()
        if not self.multiprocess:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST

        def merged() -> bytes:
            registry = CollectorRegistry()
            MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)

        # Reads one small file per worker and metric type: off the event loop.
        return await asyncio.to_thread(merged), CONTENT_TYPE_LATEST

"""OpenTelemetry tracing, off by default (Kratos' ``tracing`` keys; DESIGN §6: the hot path pays
nothing for it when off).

One ``Tracing`` is built in ``app.build_services`` from ``config.tracing`` and handed to whoever
makes spans. Off, it is ``None`` for the hot path's owners (the access log, the access check, the
session resolver, the gateway: one ``is None`` test per request) and ``Tracing.off()`` elsewhere,
whose ``span`` returns one shared no-op context manager; OpenTelemetry is not even imported.

On, the access log opens a SERVER span per request (``start_request``), continuing the trace of a
``traceparent`` sent by a trusted proxy and ignoring anyone else's; children are opened with
``span`` and find their parent through OpenTelemetry's context (a ``contextvars`` value that
follows the request's task). ``inject`` gives the ``traceparent`` for the upstream request.

Attributes are a closed vocabulary: ``span`` and ``start_request`` accept only the names in
``ATTRIBUTES`` (ids, methods, statuses, outcomes), so a token, cookie, password or one-time code
can reach an exporter only by someone adding a name here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from sidecar.config.model import TracingConfig

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

ATTRIBUTES = frozenset(
    {
        # OpenTelemetry semantic conventions
        "http.request.method",
        "http.response.status_code",
        "url.path",
        "url.scheme",
        "server.address",
        "server.port",
        "client.address",
        "user_agent.original",
        "enduser.id",
        "error.type",
        # sidecar's own
        "sidecar.request_id",
        "sidecar.listener",
        "sidecar.route_class",
        "sidecar.rule",
        "sidecar.decision",
        "sidecar.session.cache",
        "sidecar.session.id",
        "sidecar.identity.found",
        "sidecar.hash.algorithm",
        "sidecar.hash.operation",
        "sidecar.courier.message_id",
        "sidecar.courier.template",
        "sidecar.courier.result",
        "sidecar.webhook.id",
    }
)

Attr = str | int | float | bool


def checked(attributes: Mapping[str, Attr | None]) -> dict[str, Attr]:
    unknown = set(attributes) - ATTRIBUTES
    if unknown:
        raise ValueError(f"span attribute(s) {sorted(unknown)} are not in sidecar.tracing.ATTRIBUTES")
    return {k: v for k, v in attributes.items() if v is not None}


_NOOP = contextlib.nullcontext(None)


class Tracing:
    """Spans for sidecar's own work; see the module docstring."""

    def __init__(self, config: TracingConfig) -> None:
        self.enabled = config.enabled
        self._provider: TracerProvider | None = None
        self._tracer: Tracer | None = None
        if self.enabled:
            self._provider, self._tracer = _build(config)

    @classmethod
    def off(cls) -> Tracing:
        return cls(TracingConfig())

    def span(
        self, name: str, attributes: Mapping[str, Attr | None] | None = None, *, client: bool = False
    ) -> contextlib.AbstractContextManager[Span | None]:
        """A child of the current span (a root when there is none); a no-op when off.
        ``client``: the span of a call to another service (OpenTelemetry's CLIENT kind)."""
        if self._tracer is None:
            return _NOOP
        return self._span(name, client, checked(attributes or {}))

    @contextlib.contextmanager
    def _span(self, name: str, client: bool, attributes: dict[str, Attr]) -> Iterator[Span]:
        from opentelemetry.trace import SpanKind, Status, StatusCode

        tracer = self._tracer
        if tracer is None:  # pragma: no cover - ``span`` checked it
            raise RuntimeError("tracing is off")
        kind = SpanKind.CLIENT if client else SpanKind.INTERNAL
        with tracer.start_as_current_span(
            name, kind=kind, attributes=attributes, record_exception=False, set_status_on_exception=False
        ) as span:
            try:
                yield span
            except BaseException as exc:
                # The exception's type, never its message (it may quote input).
                span.set_attribute("error.type", type(exc).__name__)
                span.set_status(Status(StatusCode.ERROR))
                raise

    def start_request(
        self, name: str, traceparent: bytes | None, attributes: Mapping[str, Attr | None]
    ) -> tuple[Span, object]:
        """Open and make current the SERVER span of one request; ``finish_request`` ends it.

        ``traceparent`` is given only when a trusted proxy sent it: the span then continues
        that trace (and keeps its sampling decision)."""
        from opentelemetry import context, trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        tracer = self._tracer
        if tracer is None:
            raise RuntimeError("tracing is off")
        parent: Context | None = None
        if traceparent is not None:
            parent = TraceContextTextMapPropagator().extract({"traceparent": traceparent.decode("latin-1")})
        span = tracer.start_span(
            name, context=parent, kind=trace.SpanKind.SERVER, attributes=checked(attributes)
        )
        token = context.attach(trace.set_span_in_context(span, parent))
        return span, token

    @staticmethod
    def finish_request(span: Span, token: object, status: int, attributes: Mapping[str, Attr | None]) -> None:
        from opentelemetry import context
        from opentelemetry.trace import Status, StatusCode

        span.set_attributes(checked({"http.response.status_code": status, **attributes}))
        if status >= 500:
            span.set_status(Status(StatusCode.ERROR))
        span.end()
        context.detach(token)  # type: ignore[arg-type]

    @staticmethod
    def trace_id(span: Span) -> str | None:
        ctx = span.get_span_context()
        return f"{ctx.trace_id:032x}" if ctx.is_valid else None

    def inject(self) -> bytes | None:
        """The ``traceparent`` of the current span, for an outgoing request; None when off."""
        if self._tracer is None:
            return None
        from opentelemetry.trace import get_current_span

        ctx = get_current_span().get_span_context()
        if not ctx.is_valid:
            return None
        return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}".encode()

    async def shutdown(self) -> None:
        """Flush what is queued (bounded by the exporter's timeout) and stop the export thread."""
        if self._provider is not None:
            import asyncio

            await asyncio.to_thread(self._provider.shutdown)


def _build(config: TracingConfig) -> tuple[Any, Any]:
    # Imported only when tracing is on: off, the process never loads OpenTelemetry.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    from sidecar import __version__

    otlp = config.providers.otlp
    scheme = "http" if otlp.insecure else "https"
    headers = {"Authorization": otlp.authorization_header} if otlp.authorization_header else None
    exporter = OTLPSpanExporter(
        endpoint=f"{scheme}://{otlp.server_url}/v1/traces", headers=headers, timeout=5
    )
    resource: dict[str, str] = {"service.name": config.service_name, "service.version": __version__}
    if config.deployment_environment:
        resource["deployment.environment"] = config.deployment_environment
    # Kratos' sampler: the parent's decision when there is one, else the ratio.
    provider = TracerProvider(
        resource=Resource.create(resource),
        sampler=ParentBased(TraceIdRatioBased(otlp.sampling.sampling_ratio)),
    )
    # Spans are queued and exported by a thread in batches: a slow receiver never slows requests
    # (a full queue drops spans instead).
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=1000))
    # A provider of our own, not the global one: nothing registers at import time or globally.
    return provider, provider.get_tracer("sidecar")

"""The tracing seam itself: off costs nothing and loads nothing; attributes are a closed set."""

from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import ValidationError

from sidecar.config.model import TracingConfig
from sidecar.tracing import Tracing, checked

ON = {"provider": "otel", "providers": {"otlp": {"server_url": "127.0.0.1:4318", "insecure": True}}}


def test_off_is_a_shared_no_op() -> None:
    tracing = Tracing.off()
    assert not tracing.enabled
    first = tracing.span("sidecar.rules.match")
    assert first is tracing.span("sidecar.upstream", {"server.address": "x"}, client=True)
    with first as span:
        assert span is None
    assert tracing.inject() is None


def test_off_never_loads_the_tracer_or_the_exporter() -> None:
    # (redis-py imports the OpenTelemetry API for its own optional metrics; the SDK's tracing and
    # the exporter are ours alone.)
    code = (
        "import sys; from sidecar.app import build_services; from sidecar.config.loader import load_config;"
        "build_services(load_config(dev=True));"
        "print(sorted(m for m in sys.modules if m.startswith(('opentelemetry.sdk.trace', "
        "'opentelemetry.exporter', 'opentelemetry.trace.propagation.tracecontext'))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]"


def test_attributes_outside_the_vocabulary_are_refused() -> None:
    assert checked({"sidecar.rule": "r", "enduser.id": None}) == {"sidecar.rule": "r"}
    for name in ("sidecar.session.token", "http.request.header.cookie", "password"):
        with pytest.raises(ValueError, match=r"not in sidecar\.tracing\.ATTRIBUTES"):
            checked({name: "x"})
    tracing = Tracing(TracingConfig.model_validate(ON))
    try:
        with pytest.raises(ValueError, match="ATTRIBUTES"), tracing.span("x", {"sidecar.code": "123456"}):
            pass
    finally:
        tracing._provider.shutdown()  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("tracing", "message"),
    [
        ({"provider": "jaeger"}, "tracing provider 'jaeger' is not supported: use 'otel'"),
        ({"provider": "zipkin"}, "tracing provider 'zipkin' is not supported"),
        ({"provider": "otel"}, "needs providers.otlp.server_url"),
        ({"providers": {"otlp": {"server_url": "http://collector:4318"}}}, "expected host:port"),
        ({"providers": {"otlp": {"sampling": {"sampling_ratio": 1.5}}}}, "less than or equal to 1"),
        ({"providers": {"otlp": {"endpoint": "x:1"}}}, "Extra inputs are not permitted"),
    ],
)
def test_bad_tracing_config_is_refused_by_name(tracing: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        TracingConfig.model_validate(tracing)


def test_kratos_tracing_sections_load() -> None:
    kratos = {
        "provider": "otel",
        "service_name": "Ory Kratos",
        "deployment_environment": "staging",
        "providers": {
            "otlp": {"server_url": "localhost:4318", "insecure": True, "sampling": {"sampling_ratio": 0.5}},
            "jaeger": {"local_agent_address": "127.0.0.1:6831"},
            "zipkin": {"server_url": "http://localhost:9411/api/v2/spans"},
        },
    }
    config = TracingConfig.model_validate(kratos)
    assert config.enabled and config.providers.otlp.sampling.sampling_ratio == 0.5
    assert not TracingConfig().enabled and not TracingConfig.model_validate({"provider": ""}).enabled

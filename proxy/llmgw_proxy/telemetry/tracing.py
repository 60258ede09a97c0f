"""OpenTelemetry spans with the GenAI semantic conventions, or nothing at all.

When ``OTEL_EXPORTER_OTLP_ENDPOINT`` is unset, ``Tracing.enabled`` is False and
the request path skips every span call: no context objects, no attribute dicts.
The GenAI client metrics (``genai.ClientMetrics``) are exported over OTLP too
when ``OTEL_METRICS_EXPORTER=otlp`` asks for them (off by default: the
sidecar's Prometheus metrics cover the same calls).

When it is on, the trace goes on across the sidecar: a ``traceparent`` from the
application is the server span's parent, and the provider gets the client
span's (W3C Trace Context), so an application's trace shows the provider call.

Nothing of OpenTelemetry is imported with this module: its API by a ``Tracing``
that traces (or exports metrics), the SDK and the OTLP exporters (several MB of
RSS, a tenth of the start time) by ``from_environment`` when tracing is on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from llmgw_proxy.telemetry import genai

if TYPE_CHECKING:
    from opentelemetry import metrics, trace
    from opentelemetry.trace.propagation import tracecontext

OPERATION = {
    "chat/completions": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
    "responses": "chat",
    "messages": "chat",
}


def operation(endpoint: str) -> str:
    """``gen_ai.operation.name`` and the span name's verb. A relayed path is named by its first
    segment, so ids in paths (``files/file-abc``) never become span names."""
    return OPERATION.get(endpoint) or endpoint.split("/", 1)[0]


class Tracing:
    def __init__(
        self,
        provider: trace.TracerProvider | None,
        meter_provider: metrics.MeterProvider | None = None,
        *,
        legacy_system: bool = False,
    ) -> None:
        self.provider = provider
        self.enabled = provider is not None
        self._propagator: tracecontext.TraceContextTextMapPropagator | None = None
        if provider is not None:
            from opentelemetry.trace.propagation import tracecontext

            self._propagator = tracecontext.TraceContextTextMapPropagator()
        self.tracer: trace.Tracer | None = provider.get_tracer("llmgw_proxy") if provider else None
        self.meter_provider = meter_provider
        self.metrics = genai.ClientMetrics(meter_provider) if meter_provider is not None else None
        self.legacy_system = legacy_system  # also write gen_ai.system (OTEL_SEMCONV_STABILITY_OPT_IN)

    def server_span(self, endpoint: str, model: str, incoming: Any) -> Any:
        from opentelemetry import trace

        assert self.tracer is not None and self._propagator is not None
        op = operation(endpoint)
        return self.tracer.start_span(
            f"{op} {model}",
            context=self._propagator.extract(incoming),
            kind=trace.SpanKind.SERVER,
            attributes={"gen_ai.operation.name": op, "gen_ai.request.model": model},
        )

    def call_attributes(self, endpoint: str, kind: str, model: str, base_url: str) -> dict[str, Any]:
        """What names one provider call, in its span and its metrics."""
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": operation(endpoint),
            "gen_ai.provider.name": genai.provider_name(kind),
            "gen_ai.request.model": model,
            **dict(genai.server_attributes(base_url)),
        }
        if self.legacy_system:
            attributes["gen_ai.system"] = genai.LEGACY_SYSTEM.get(kind, kind)
        return attributes

    def client_span(self, parent: Any, attributes: dict[str, Any], body: Mapping[str, Any]) -> Any:
        """The span of one provider call, with the ``gen_ai.request.*`` parameters ``body`` set."""
        from opentelemetry import trace

        assert self.tracer is not None
        return self.tracer.start_span(
            f"{attributes['gen_ai.operation.name']} {attributes['gen_ai.request.model']}",
            context=trace.set_span_in_context(parent),
            kind=trace.SpanKind.CLIENT,
            attributes={**attributes, **genai.request_attributes(body)},
        )

    def propagate(self, span: Any, outgoing: Any) -> None:
        """Set ``traceparent`` (and ``tracestate``) in the upstream headers to the client span's."""
        from opentelemetry import trace

        assert self._propagator is not None
        self._propagator.inject(outgoing, context=trace.set_span_in_context(span))

    def shutdown(self) -> None:
        # The SDK's providers flush on shutdown; the API's no-op ones have no such method.
        for provider in (self.provider, self.meter_provider):
            shutdown = getattr(provider, "shutdown", None)
            if shutdown is not None:
                shutdown()


def from_environment(environ: Mapping[str, str] = os.environ) -> Tracing:
    if not environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return Tracing(None)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME", "llmgw-proxy")})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    meter_provider = None
    if environ.get("OTEL_METRICS_EXPORTER", "").strip() == "otlp":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        reader = PeriodicExportingMetricReader(OTLPMetricExporter())
        meter_provider = MeterProvider(metric_readers=[reader], resource=resource)
    return Tracing(provider, meter_provider, legacy_system=genai.legacy_opted_in(environ))

"""OpenTelemetry spans with the GenAI semantic conventions, or nothing at all.

When ``OTEL_EXPORTER_OTLP_ENDPOINT`` is unset, ``Tracing.enabled`` is False and
the request path skips every span call: no context objects, no attribute dicts.

When it is on, the trace goes on across the sidecar: a ``traceparent`` from the
application is the server span's parent, and the provider gets the client
span's (W3C Trace Context), so an application's trace shows the provider call.
"""

from __future__ import annotations

import os
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

SYSTEM = {"openai": "openai", "azure-openai": "az.ai.openai", "openai-compatible": "openai"}
OPERATION = {"chat/completions": "chat", "completions": "text_completion", "embeddings": "embeddings"}
_PROPAGATOR = TraceContextTextMapPropagator()


class Tracing:
    def __init__(self, provider: trace.TracerProvider | None) -> None:
        self.provider = provider
        self.enabled = provider is not None
        self.tracer: trace.Tracer | None = provider.get_tracer("llmgw_proxy") if provider else None

    def server_span(self, endpoint: str, model: str, incoming: Any) -> Any:
        assert self.tracer is not None
        op = OPERATION.get(endpoint, endpoint)
        return self.tracer.start_span(
            f"{op} {model}",
            context=_PROPAGATOR.extract(incoming),
            kind=trace.SpanKind.SERVER,
            attributes={"gen_ai.operation.name": op, "gen_ai.request.model": model},
        )

    def client_span(self, parent: Any, endpoint: str, system: str, model: str, address: str) -> Any:
        assert self.tracer is not None
        op = OPERATION.get(endpoint, endpoint)
        return self.tracer.start_span(
            f"{op} {model}",
            context=trace.set_span_in_context(parent),
            kind=trace.SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": op,
                "gen_ai.system": SYSTEM.get(system, system),
                "gen_ai.request.model": model,
                "server.address": address,
            },
        )

    @staticmethod
    def propagate(span: Any, outgoing: Any) -> None:
        """Set ``traceparent`` (and ``tracestate``) in the upstream headers to the client span's."""
        _PROPAGATOR.inject(outgoing, context=trace.set_span_in_context(span))

    def shutdown(self) -> None:
        if isinstance(self.provider, TracerProvider):
            self.provider.shutdown()


def from_environment() -> Tracing:
    if not os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return Tracing(None)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    name = os.environ.get("OTEL_SERVICE_NAME", "llmgw-proxy")
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return Tracing(provider)

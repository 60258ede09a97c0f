"""The OpenTelemetry GenAI semantic conventions: what a provider call is called in spans and metrics.

Names follow the current (development-status) conventions: ``gen_ai.provider.name``
rather than the older ``gen_ai.system``, which is added only when
``OTEL_SEMCONV_STABILITY_OPT_IN`` holds ``gen_ai/dup`` (for dashboards built on
the old name; the values differ too, e.g. ``az.ai.openai`` then
``azure.ai.openai``).

Only what the request and the answer carry anyway is read: the request's
sampling parameters that were set, the answer's id, model and finish reasons.
Nothing here reads prompts or completions into attributes.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from llmgw_proxy.upstream import sse

if TYPE_CHECKING:
    from opentelemetry import metrics

PROVIDER_NAME = {
    "openai": "openai",
    "azure-openai": "azure.ai.openai",
    "openai-compatible": "openai",
    "anthropic": "anthropic",
}
LEGACY_SYSTEM = {
    "openai": "openai",
    "azure-openai": "az.ai.openai",
    "openai-compatible": "openai",
    "anthropic": "anthropic",
}
OPT_IN_ENV = "OTEL_SEMCONV_STABILITY_OPT_IN"
LEGACY_OPT_IN = "gen_ai/dup"

_NUMBERS = {
    "max_tokens": "gen_ai.request.max_tokens",
    "max_completion_tokens": "gen_ai.request.max_tokens",
    "max_output_tokens": "gen_ai.request.max_tokens",
    "temperature": "gen_ai.request.temperature",
    "top_p": "gen_ai.request.top_p",
    "top_k": "gen_ai.request.top_k",
    "frequency_penalty": "gen_ai.request.frequency_penalty",
    "presence_penalty": "gen_ai.request.presence_penalty",
    "seed": "gen_ai.request.seed",
}
_MAX_STOP_SEQUENCES = 8  # OpenAI takes at most 4; a longer list is cut rather than copied whole
_FINISH = (b"finish_reason", b"stop_reason")

# Buckets the conventions give for the two client metrics.
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)


def legacy_opted_in(environ: Mapping[str, str]) -> bool:
    values = environ.get(OPT_IN_ENV, "")
    return LEGACY_OPT_IN in (v.strip() for v in values.split(","))


def provider_name(kind: str) -> str:
    return PROVIDER_NAME.get(kind, kind)


@functools.lru_cache(maxsize=256)
def server_attributes(base_url: str) -> tuple[tuple[str, str | int], ...]:
    """``server.address`` (the host alone: never a scheme, path or userinfo) and ``server.port``."""
    parts = urlsplit(base_url)
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return (("server.address", host),)
    return (("server.address", host), ("server.port", port))


def request_attributes(body: Mapping[str, Any]) -> dict[str, Any]:
    """The ``gen_ai.request.*`` parameters the request set (a model's defaults are not known here)."""
    attributes: dict[str, Any] = {}
    for field, name in _NUMBERS.items():
        value = body.get(field)
        if isinstance(value, int | float) and not isinstance(value, bool):
            attributes[name] = value
    stop = body.get("stop", body.get("stop_sequences"))
    if isinstance(stop, str):
        attributes["gen_ai.request.stop_sequences"] = [stop]
    elif isinstance(stop, list) and stop and all(isinstance(s, str) for s in stop):
        attributes["gen_ai.request.stop_sequences"] = stop[:_MAX_STOP_SEQUENCES]
    n = body.get("n")
    if isinstance(n, int) and not isinstance(n, bool) and n != 1:
        attributes["gen_ai.request.choice.count"] = n
    if body.get("stream") is True:
        attributes["gen_ai.request.stream"] = True
    encoding = body.get("encoding_format")
    if isinstance(encoding, str):
        attributes["gen_ai.request.encoding_formats"] = [encoding]
    return attributes


class ResponseFacts:
    """The answer's ``gen_ai.response.*`` facts, read from a JSON answer or a stream's events.

    Read where OpenAI, the Responses API (``response``) and Anthropic
    (``message``, ``stop_reason``) put them. For a stream only chunks that
    mention a finish reason are decoded, so the cost stays off other chunks.
    """

    __slots__ = ("finish_reasons", "id", "model")

    def __init__(self) -> None:
        self.id: str | None = None
        self.model: str | None = None
        self.finish_reasons: list[str] = []

    def read(self, obj: object) -> None:
        if not isinstance(obj, dict):
            return
        for source in (obj, obj.get("response"), obj.get("message")):
            if isinstance(source, dict):
                if self.id is None and isinstance(source.get("id"), str):
                    self.id = source["id"]
                if self.model is None and isinstance(source.get("model"), str):
                    self.model = source["model"]
        choices = obj.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if isinstance(choice, dict):
                self._finished(choice.get("finish_reason"))
        self._finished(obj.get("stop_reason"))
        delta = obj.get("delta")
        if isinstance(delta, dict):
            self._finished(delta.get("stop_reason"))

    def read_json(self, data: bytes) -> None:
        """A JSON answer, or one event's data."""
        try:
            self.read(json.loads(data))
        except (ValueError, RecursionError):
            return

    def read_chunk(self, chunk: bytes) -> None:
        if _FINISH[0] not in chunk and _FINISH[1] not in chunk:
            return
        events, _ = sse.split_events(chunk)
        for obj in sse.iter_json(events):
            self.read(obj)

    def _finished(self, reason: object) -> None:
        if isinstance(reason, str) and reason not in self.finish_reasons and len(self.finish_reasons) < 8:
            self.finish_reasons.append(reason)

    def attributes(self) -> dict[str, Any]:
        attributes: dict[str, Any] = {}
        if self.id is not None:
            attributes["gen_ai.response.id"] = self.id[:256]
        if self.model is not None:
            attributes["gen_ai.response.model"] = self.model[:256]
        if self.finish_reasons:
            attributes["gen_ai.response.finish_reasons"] = list(self.finish_reasons)
        return attributes


class ClientMetrics:
    """The GenAI client metrics (token usage, duration, time to first chunk), one record per provider call."""

    def __init__(self, provider: metrics.MeterProvider) -> None:
        meter = provider.get_meter("llmgw_proxy")
        self.tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )

        self.first_chunk = meter.create_histogram(
            "gen_ai.client.operation.time_to_first_chunk",
            unit="s",
            description="Time to receive the first chunk in a streaming operation.",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )

    def record(
        self,
        attributes: dict[str, Any],
        duration: float,
        input_tokens: int | None,
        output_tokens: int | None,
        first_chunk: float | None,
    ) -> None:
        self.duration.record(duration, attributes)
        if first_chunk is not None:
            self.first_chunk.record(first_chunk, attributes)
        if input_tokens is not None:
            self.tokens.record(input_tokens, {**attributes, "gen_ai.token.type": "input"})
        if output_tokens is not None:
            self.tokens.record(output_tokens, {**attributes, "gen_ai.token.type": "output"})

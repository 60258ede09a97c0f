"""What flows through the request path: the ``Call``, the step signature, the long-lived services.

Every step module imports this one, and nothing here imports a step, so the
request path has no cycle: ``pipeline`` composes the steps, the steps share
only these types.

Each field of ``Call`` has one owner, the step that writes it; later steps
only read it. The table in ``docs/architecture.md`` lists them. A step that
needs to act on what a later step produces (the cache stores answers that
``forward`` received) registers a callback on the call instead of having the
later step know about it, so removing a step from ``pipeline.STEPS`` removes
all of its behaviour.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from llmgw_proxy import config, errors, upstream
from llmgw_proxy.runtime import state
from llmgw_proxy.telemetry import genai, metrics, tracing


@dataclasses.dataclass(slots=True)
class Services:
    """What steps need besides the call: long-lived, one per server."""

    live: state.Live
    transport: upstream.Transport
    metrics: metrics.Metrics
    tracing: tracing.Tracing


AnswerHook = Callable[[bool, bytes], None]
"""Called by ``forward`` with a complete 200 answer: (streamed, the bytes the caller received)."""


@dataclasses.dataclass(slots=True)
class Call:
    # Set by pipeline.handler when the request arrives.
    request: web.Request
    endpoint: str  # the path after /v1/: "chat/completions", "responses", "messages", a relayed path...
    services: Services
    snapshot: state.Snapshot
    request_id: str
    started: float
    # account: the server span, and the status the caller got.
    span: Any = None
    # parse_body
    raw: bytes = b""
    body: dict[str, Any] = dataclasses.field(default_factory=dict)
    model: str = ""
    stream: bool = False
    finite: bool = False  # the body holds no NaN or infinity (known when orjson decoded it)
    # resolve_route: the route, and those of its targets whose provider may serve the model.
    route: config.Route | None = None
    targets: tuple[config.Target, ...] = ()
    # Any step: headers the caller's answer carries, and hooks for a complete 200 answer.
    response_headers: dict[str, str] = dataclasses.field(default_factory=dict)
    answer_hooks: list[AnswerHook] = dataclasses.field(default_factory=list)
    # attempt_targets: the target being tried, and whether it needs the answer's token usage.
    target: config.Target | None = None
    provider: state.ProviderState | None = None
    attempts: int = 0
    wants_usage: bool = False
    deadline: float = math.inf  # loop time by which the target's answer must have ended (timeouts.total)
    # forward: what the upstream answered.
    status: int = 0
    upstream_duration: float | None = None
    usage: dict[str, Any] | None = None
    stream_text: str = ""  # a stream's completion text, kept only when wants_usage (to estimate usage)
    broken: errors.ProxyError | None = None  # the upstream failed a stream after its headers went out
    first_event_at: float | None = None  # loop time a stream's first event went to the caller
    last_chunk_at: float | None = None  # loop time a complete stream's last chunk went out
    chunks: int = 0  # stream chunks written to the caller
    facts: genai.ResponseFacts | None = None  # the answer's id, model, finish reasons (telemetry on)
    response_id: str = ""  # a Responses or Messages answer's id (pins stored responses to their provider)


Next = Callable[[Call], Awaitable[web.StreamResponse]]


class Step(Protocol):
    def __call__(self, call: Call, next_step: Next) -> Awaitable[web.StreamResponse]: ...

"""The cache step: answer a repeated cacheable request from the sidecar's memory.

The primary target's provider decides: its ``cache`` policy says whether the
route caches, for how long, and which requests (``cache_key.decide``). The
key covers the route and the primary target (provider and upstream model),
whoever ends up serving: a fallback's answer is stored under the primary's
key, since the caller asked the route, not a provider, and one lookup per
request keeps a hit cheap.

Only 200 answers are stored: a plain one as its JSON body, a stream as the
bytes the caller received, under the same key (one lookup per request). A hit
is replayed in the caller's form: JSON for a plain request (a stored stream
is assembled into one completion), SSE for a stream (a stored JSON answer
becomes one chunk per choice). A hit never reaches the attempt loop, so it
spends no rate limit quota. ``x-llmgw-cache`` says HIT, MISS (``no-cache``
refreshes count as MISS) or BYPASS (``no-store``, or a request the policy
does not cache).

The one store per server is bounded by ``ProxyConfig.cache``; a reload that
changes the bounds applies them from the next answer stored (entries are
kept until then). Hits, misses and evictions are the store's own counts,
read at scrape time; only bypasses and refreshes are counted here.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from llmgw_proxy import sse
from llmgw_proxy.policies import cache_key, cache_store

if TYPE_CHECKING:
    from llmgw_proxy.pipeline import Call, Next

JSON = b"J"
SSE = b"S"
_SSE = SSE[0]

_BYPASS, _USE = cache_key.Decision.BYPASS, cache_key.Decision.USE  # globals: cheaper than the class
_CHAT = "chat/completions"


def _store_of(call: Call) -> cache_store.MemoryStore:
    services = call.services
    bounds = call.snapshot.config.cache
    store = services.cache
    if store is None:
        store = services.cache = cache_store.MemoryStore(bounds, asyncio.get_running_loop().time)
        services.metrics.cache_store = store
    elif store.bounds is not bounds:
        store.bounds = bounds
    return store


def cache(call: Call, next_step: Next) -> Awaitable[web.StreamResponse]:
    # A plain function: the lookup never waits, so a miss hands on the next step's awaitable
    # and adds no coroutine frame to every suspension of the request below it.
    assert call.route is not None
    primary = call.route.targets[0]
    policy = call.snapshot.providers[primary.provider].provider.cache
    if not policy.enabled:
        return next_step(call)
    decision = cache_key.decide(policy, call.endpoint, call.body, call.request.headers.get("Cache-Control"))
    if decision is _BYPASS:
        call.cache_status = "BYPASS"
        metrics_ = call.services.metrics
        metrics_.count(metrics_.cache_lookups, ("bypass",))
        return next_step(call)
    key = cache_key.key(
        call.route.model, primary.provider, primary.model or call.model, call.endpoint, call.body, call.finite
    )
    store = _store_of(call)  # made here, so keep() finds it
    if decision is _USE:
        found = store.get(key)  # the store counts the hit or miss
        if found is not None:
            call.provider = call.snapshot.providers[primary.provider]
            call.status = 200
            return _replay(call, found)
    else:
        metrics_ = call.services.metrics
        metrics_.count(metrics_.cache_lookups, ("miss",))  # a refresh: no lookup, still a miss
    call.cache_status = "MISS"
    call.cache_key = key
    call.cache_ttl = policy.ttl
    return next_step(call)


def keep(call: Call, kind: bytes, data: bytes) -> None:
    """Store a successful answer (forward calls this for 200s only)."""
    store = call.services.cache
    if call.cache_key is not None and store is not None:
        store.put(call.cache_key, kind + data, call.cache_ttl)


def _headers(call: Call) -> dict[str, str]:
    assert call.provider is not None
    return {"x-llmgw-provider": call.provider.name, "x-llmgw-cache": "HIT", "x-request-id": call.request_id}


async def _replay(call: Call, found: bytes) -> web.StreamResponse:
    stored_stream, data = found[0] == _SSE, found[1:]
    if not call.stream:
        if stored_stream:
            data = assemble(data, call.endpoint == _CHAT)
        return web.Response(body=data, content_type="application/json", headers=_headers(call))
    if not stored_stream:
        data = _as_stream(json.loads(data), _wants_usage(call.body))
    out = web.StreamResponse(headers={**_headers(call), "Content-Type": "text/event-stream"})
    await out.prepare(call.request)
    await out.write(data)
    await out.write_eof()
    return out


def _wants_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _as_stream(answer: dict[str, Any], usage: bool) -> bytes:
    """A stored completion as the SSE stream a provider would have sent."""
    base: dict[str, Any] = {
        k: answer.get(k) for k in ("id", "created", "model", "system_fingerprint") if k in answer
    }
    chat = answer.get("object") == "chat.completion"
    base["object"] = "chat.completion.chunk" if chat else answer.get("object", "text_completion")
    parts = []
    for choice in answer.get("choices") or []:
        if chat:
            message = choice.get("message") or {}
            delta = {k: v for k, v in message.items() if v is not None}
            if "tool_calls" in delta:
                delta["tool_calls"] = [{**c, "index": i} for i, c in enumerate(delta["tool_calls"])]
            item = {
                "index": choice.get("index", 0),
                "delta": delta,
                "finish_reason": choice.get("finish_reason"),
            }
        else:
            item = {k: v for k, v in choice.items()}
        parts.append(sse.encode(json.dumps({**base, "choices": [item]}).encode()))
    if usage and isinstance(answer.get("usage"), dict):
        parts.append(sse.encode(json.dumps({**base, "choices": [], "usage": answer["usage"]}).encode()))
    parts.append(sse.encode(sse.DONE))
    return b"".join(parts)


def assemble(stream: bytes, chat: bool) -> bytes:
    """A stored stream as one answer: each choice's text joined, as a chat or text completion."""
    events, _ = sse.split_events(stream + b"\n\n")
    choices: dict[int, dict[str, Any]] = {}
    answer: dict[str, Any] = {}
    for chunk in sse.iter_json(events):
        for k in ("id", "created", "model", "system_fingerprint"):
            if k in chunk:
                answer[k] = chunk[k]
        if isinstance(chunk.get("usage"), dict):
            answer["usage"] = chunk["usage"]
        for c in chunk.get("choices") or []:
            index = c.get("index", 0)
            entry = choices.setdefault(
                index, {"index": index, "content": "", "role": "assistant", "finish": None}
            )
            delta = c.get("delta") or {}
            entry["content"] += delta.get("content") or c.get("text") or ""
            entry["role"] = delta.get("role") or entry["role"]
            entry["finish"] = c.get("finish_reason") or entry["finish"]
    answer["object"] = "chat.completion" if chat else "text_completion"
    answer["choices"] = [
        {
            "index": i,
            **({"message": {"role": c["role"], "content": c["content"]}} if chat else {"text": c["content"]}),
            "finish_reason": c["finish"],
            "logprobs": None,
        }
        for i, c in sorted(choices.items())
    ]
    return json.dumps(answer).encode()

"""The cache step: answer a repeated cacheable request from the sidecar's memory.

The primary target's provider decides: its ``cache`` policy says whether the
route caches, for how long, and which requests (``cache_key.decide``). The
key covers the route and the primary target (provider and upstream model),
whoever ends up serving: a fallback's answer is stored under the primary's
key, since the caller asked the route, not a provider, and one lookup per
request keeps a hit cheap.

On a miss the step registers a hook on the call (``Call.answer_hooks``);
``forward`` calls it with each complete 200 answer, so this module is the only
writer of the store, and a path without this step caches nothing. A plain
answer is stored as its JSON body, a stream as the bytes the caller received,
under the same key (one lookup per request). A hit
is replayed in the caller's form: JSON for a plain request (a stored stream
is assembled into one completion), SSE for a stream (a stored JSON answer
becomes one chunk per choice). A hit never reaches the attempt loop, so it
spends no rate limit quota. ``x-llmgw-cache`` says HIT, MISS (``no-cache``
refreshes count as MISS) or BYPASS (``no-store``, or a request the policy
does not cache).

A policy with ``cache.shared`` keeps its entries in the shared store (Redis)
instead, under ``<prefix>:{<sharedId>}:cache:<key>`` with the TTL as Redis's
expiry, so a hit in one sidecar serves all: one GET per lookup, bounded by the
store's timeout; the write goes in the background. While the shared store is
down, the sidecar's own memory store serves and is filled instead (counted as
a ``cache`` fallback), and a failed GET counts as a miss.

The one store per sidecar (``state.Live.cache``) is bounded by
``ProxyConfig.cache``; a reload that changes the bounds applies them from the
next answer stored (entries are kept until then). Hits, misses and evictions are the store's own counts,
read at scrape time; only bypasses and refreshes are counted here.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from llmgw_proxy.policies import cache_key, cache_store, global_limits
from llmgw_proxy.shared import store as shared_store
from llmgw_proxy.steps.call import Call, Next
from llmgw_proxy.upstream import sse

# An entry is one kind byte and the answer's bytes: a JSON body, or an SSE stream as sent.
JSON = b"J"
SSE = b"S"
_CHAT = "chat/completions"


async def cache(call: Call, next_step: Next) -> web.StreamResponse:
    assert call.route is not None and call.targets
    primary = call.targets[0]
    policy = call.snapshot.providers[primary.provider].provider.cache
    if not policy.enabled:
        return await next_step(call)
    metrics_ = call.services.metrics
    decision = cache_key.decide(policy, call.endpoint, call.body, call.request.headers.get("Cache-Control"))
    if decision is cache_key.Decision.BYPASS:
        call.response_headers["x-llmgw-cache"] = "BYPASS"
        metrics_.count(metrics_.cache_lookups, ("bypass",))
        return await next_step(call)
    key = cache_key.key(
        call.route.model, primary.provider, primary.model or call.model, call.endpoint, call.body, call.finite
    )
    store = call.services.live.cache
    shared = call.services.live.shared if policy.shared else None
    if shared is not None and not shared.up:
        shared.fell_back(primary.provider, "cache")
        shared = None
    if shared is not None:
        provider_id = call.snapshot.providers[primary.provider].provider.shared_id
        assert provider_id is not None  # the config refuses a shared cache without one
        shared_key = global_limits.namespace(shared.cfg.key_prefix, provider_id) + ":cache:" + key
        keep = functools.partial(_keep_shared, shared, shared_key, functools.partial(_keep, store, key))
        return await _shared(call, next_step, shared, shared_key, decision, policy.ttl, keep)
    if decision is cache_key.Decision.USE:
        found = store.get(key)  # the store counts the hit or miss
        replay = _in_callers_form(call, found) if found is not None else None
        if replay is not None:
            call.provider = call.snapshot.providers[primary.provider]
            call.status = 200
            return await _replay(call, *replay)
        if found is not None:
            store.delete(key)  # an answer the sidecar cannot restate: ask upstream again, store that
    else:
        metrics_.count(metrics_.cache_lookups, ("miss",))  # a refresh: no lookup, still a miss
    call.response_headers["x-llmgw-cache"] = "MISS"
    call.answer_hooks.append(functools.partial(_keep, store, key, policy.ttl))
    return await next_step(call)


def _keep(store: cache_store.MemoryStore, key: str, ttl: float, streamed: bool, data: bytes) -> None:
    store.put(key, (SSE if streamed else JSON) + data, ttl)


async def _shared(
    call: Call,
    next_step: Next,
    shared: shared_store.Store,
    key: str,
    decision: cache_key.Decision,
    ttl: float,
    keep: Callable[[float, bool, bytes], None],
) -> web.StreamResponse:
    """The lookup and the write in the shared store; a failed GET is a miss."""
    metrics_ = call.services.metrics
    assert call.targets
    primary = call.targets[0]
    if decision is cache_key.Decision.USE:
        found = await shared.get(key)
        replay = _in_callers_form(call, found) if found is not None else None
        if replay is not None:
            metrics_.count(metrics_.cache_lookups, ("hit",))
            call.provider = call.snapshot.providers[primary.provider]
            call.status = 200
            return await _replay(call, *replay)
    metrics_.count(metrics_.cache_lookups, ("miss",))
    call.response_headers["x-llmgw-cache"] = "MISS"
    call.answer_hooks.append(functools.partial(keep, ttl))
    return await next_step(call)


def _keep_shared(
    shared: shared_store.Store,
    key: str,
    in_memory: Callable[[float, bool, bytes], None],
    ttl: float,
    streamed: bool,
    data: bytes,
) -> None:
    """Into Redis in the background; into memory when the store went down during the request."""
    if not shared.up:
        in_memory(ttl, streamed, data)
        return
    value = (SSE if streamed else JSON) + data
    shared.later(lambda: shared.put(key, value, ttl))


def _headers(call: Call) -> dict[str, str]:
    assert call.provider is not None
    return {"x-llmgw-provider": call.provider.name, "x-llmgw-cache": "HIT", "x-request-id": call.request_id}


def _in_callers_form(call: Call, found: bytes) -> tuple[bool, bytes] | None:
    """(streamed, bytes) of a stored answer in the form the caller asked; None if it cannot be.

    A provider's answer is stored as sent; one that is not the JSON a completion
    should be (whatever a hostile or broken provider sent) is not restated.
    """
    stored_stream, data = found[:1] == SSE, found[1:]
    try:
        if not call.stream:
            return False, assemble(data, call.endpoint == _CHAT) if stored_stream else data
        if not stored_stream:
            answer = json.loads(data)
            if not isinstance(answer, dict):
                return None
            data = _as_stream(answer, sse.asks_for_usage(call.body))
    except (ValueError, TypeError, AttributeError, RecursionError):
        return None
    return True, data


async def _replay(call: Call, streamed: bool, data: bytes) -> web.StreamResponse:
    if not streamed:
        return web.Response(body=data, content_type="application/json", headers=_headers(call))
    out = web.StreamResponse(headers={**_headers(call), "Content-Type": "text/event-stream"})
    await out.prepare(call.request)
    await out.write(data)
    await out.write_eof()
    return out


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

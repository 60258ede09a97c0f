"""A provider's ``usage`` object, read in the shape the rest of the sidecar reads.

Chat and completions report ``prompt_tokens`` / ``completion_tokens`` /
``total_tokens``; the Responses API reports ``input_tokens`` /
``output_tokens`` / ``total_tokens``; Anthropic reports ``input_tokens`` (the
uncached part), ``cache_creation_input_tokens``, ``cache_read_input_tokens``
and ``output_tokens``, with no total. The limiter settles on the total, the
metrics and logs on the two parts, so each is mapped once, here. Anthropic's
cached input counts as prompt: the model read it, and the provider's own
limits count it.
"""

from __future__ import annotations

from typing import Any

_ANTHROPIC_INPUT = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def normalized(usage: dict[str, Any] | None) -> dict[str, Any] | None:
    """``usage`` with ``prompt_tokens``, ``completion_tokens`` and ``total_tokens`` set where the
    provider's own names say them; the provider's fields are kept as they were."""
    if usage is None or "prompt_tokens" in usage:
        return usage
    if "input_tokens" not in usage and "output_tokens" not in usage:
        return usage
    out = dict(usage)
    parts = [_int(usage.get(name)) for name in _ANTHROPIC_INPUT]
    known = [p for p in parts if p is not None]
    prompt = sum(known) if known else None
    completion = _int(usage.get("output_tokens"))
    if prompt is not None:
        out["prompt_tokens"] = prompt
    if completion is not None:
        out["completion_tokens"] = completion
    total = _int(usage.get("total_tokens"))
    if total is None or (prompt is not None and completion is not None and total < prompt + completion):
        total = (prompt or 0) + (completion or 0)
    out["total_tokens"] = total
    return out


def merged(first: dict[str, Any] | None, later: dict[str, Any]) -> dict[str, Any]:
    """Anthropic streams split usage: ``message_start`` has the input, ``message_delta`` the
    (cumulative) output. Later figures win, earlier ones the later event left out stay."""
    return {**(first or {}), **{k: v for k, v in later.items() if v is not None}}

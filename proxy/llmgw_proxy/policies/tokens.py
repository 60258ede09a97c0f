"""Cheap token estimates for reservations, without a tokenizer.

No tokenizer can be downloaded in the sidecar, and a reservation only needs to
be roughly right: settling with the upstream's reported usage corrects it.

The heuristic, documented so operators can size ``defaultMaxTokens``:

- text: one token per 4 characters, rounded up (OpenAI's rule of thumb for
  English; it overestimates code and underestimates CJK text);
- chat: 4 tokens of overhead per message (role and separators) plus its
  content, name and tool calls, plus 3 for the reply's priming;
- an image part: 85 tokens (a low-detail image; high detail costs more and
  settles as debt);
- prompts or inputs already given as token ids count one per id;
- the completion budget: ``max_completion_tokens``, else ``max_tokens``, else
  ``max_output_tokens`` (Responses), else the policy's ``defaultMaxTokens``,
  times ``n`` choices. Embeddings have none;
- Responses: ``instructions`` plus ``input`` (text, or items counted like chat
  messages, each item's other fields as JSON text) plus ``tools``;
- Anthropic Messages: ``system`` plus ``messages`` (content blocks: text, 85 per
  image, tool use and tool results as JSON text) plus ``tools``; ``max_tokens``
  is the budget (the API requires it);
- relayed endpoints (audio, images, files...) reserve no tokens: only their
  request counts.
"""

from __future__ import annotations

import json
import math
from typing import Any

CHARS_PER_TOKEN = 4
PER_MESSAGE = 4
REPLY_PRIMING = 3
IMAGE = 85

CHAT = "chat/completions"
COMPLETIONS = "completions"
EMBEDDINGS = "embeddings"
RESPONSES = "responses"
MESSAGES = "messages"
ACCOUNTED = frozenset({CHAT, COMPLETIONS, EMBEDDINGS, RESPONSES, MESSAGES})
"""Endpoints whose requests reserve tokens; the rest reserve none."""


def text(value: str) -> int:
    return math.ceil(len(value) / CHARS_PER_TOKEN)


def messages(value: object) -> int:
    """Chat messages; content may be a string or a list of parts."""
    if not isinstance(value, list):
        return 0
    total = REPLY_PRIMING
    for message in value:
        total += PER_MESSAGE
        if not isinstance(message, dict):  # a decoded JSON body holds plain dicts
            continue
        total += _content(message.get("content"))
        name = message.get("name")
        if isinstance(name, str):
            total += text(name)
        calls = message.get("tool_calls")
        if calls is not None:
            total += text(json.dumps(calls))
    return total


def _content(content: object) -> int:
    if isinstance(content, str):
        return text(content)
    if not isinstance(content, list):
        return 0
    total = 0
    for part in content:
        if isinstance(part, str):
            total += text(part)
        elif isinstance(part, dict):
            if isinstance(part.get("text"), str):
                total += text(part["text"])
            elif part.get("type") in ("image_url", "input_image", "image"):
                total += IMAGE
            elif part.get("type") == "document" or part.get("type") == "input_file":
                total += text(json.dumps(part))
            elif isinstance(part.get("content"), (str, list)):  # an Anthropic tool_result
                total += _content(part["content"])
            elif "input" in part:  # an Anthropic tool_use
                total += text(json.dumps(part["input"]))
    return total


def items(value: object) -> int:
    """A Responses ``input``: text, or a list of items (messages, function calls and outputs)."""
    if isinstance(value, str):
        return text(value) + REPLY_PRIMING
    if not isinstance(value, list):
        return 0
    total = REPLY_PRIMING
    for item in value:
        total += PER_MESSAGE
        if not isinstance(item, dict):
            continue
        if "content" in item:
            total += _content(item.get("content"))
        else:  # function_call (arguments), function_call_output (output), reasoning...
            total += text(json.dumps(item))
    return total


def _system(value: object) -> int:
    """Anthropic's ``system``: a string or a list of text blocks."""
    return _content(value) if isinstance(value, (str, list)) else 0


def prompt(value: object) -> int:
    """A completions prompt or an embeddings input: text, token ids, or a list of either."""
    if isinstance(value, str):
        return text(value)
    if not isinstance(value, list):
        return 0
    if all(isinstance(item, int) for item in value):
        return len(value)
    return sum(prompt(item) for item in value)


def completion_budget(body: dict[str, Any], default_max_tokens: int) -> int:
    limit = body.get("max_completion_tokens")
    if not isinstance(limit, int) or isinstance(limit, bool):
        limit = body.get("max_tokens")
    if not isinstance(limit, int) or isinstance(limit, bool):
        limit = body.get("max_output_tokens")
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 0:
        limit = default_max_tokens
    n = body.get("n")
    choices = n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else 1
    return limit * choices


def asked(endpoint: str, body: dict[str, Any]) -> int:
    """The prompt side of a request to ``endpoint`` (the path after ``/v1/``)."""
    if endpoint == EMBEDDINGS:
        return prompt(body.get("input"))
    if endpoint == CHAT:
        tools = body.get("tools")
        return messages(body.get("messages")) + (text(json.dumps(tools)) if tools is not None else 0)
    if endpoint == COMPLETIONS:
        return prompt(body.get("prompt"))
    tools = body.get("tools")
    extra = text(json.dumps(tools)) if tools is not None else 0
    if endpoint == RESPONSES:
        instructions = body.get("instructions")
        return items(body.get("input")) + (text(instructions) if isinstance(instructions, str) else 0) + extra
    if endpoint == MESSAGES:
        return _system(body.get("system")) + messages(body.get("messages")) + extra
    return text(json.dumps(body))


def reservation(endpoint: str, body: dict[str, Any], default_max_tokens: int) -> int:
    """Tokens to reserve before sending: the prompt plus the whole completion budget."""
    if endpoint not in ACCOUNTED:
        return 0
    if endpoint == EMBEDDINGS:
        return asked(endpoint, body)
    return asked(endpoint, body) + completion_budget(body, default_max_tokens)


def streamed(endpoint: str, body: dict[str, Any], completion_text: str) -> int:
    """Usage to settle on when a stream ended without a usage chunk."""
    return asked(endpoint, body) + text(completion_text)

"""A fake Anthropic provider on loopback: ``POST /v1/messages``, plain and streamed, failing on demand.

It speaks the Messages API as Anthropic does: it wants ``x-api-key`` and
``anthropic-version`` (401 / 400 without them, in Anthropic's error shape
``{"type": "error", "error": {"type", "message"}}``), answers a ``message``
whose ``usage`` has ``input_tokens`` and ``output_tokens``, and streams the
events in Anthropic's order: ``message_start`` (the input tokens, output 1),
``content_block_start``, a ``ping``, one ``content_block_delta`` per word,
``content_block_stop``, ``message_delta`` (the cumulative output tokens) and
``message_stop``. ``max_tokens`` is required, as there, and cuts the reply
(one word a token; ``stop_reason`` ``max_tokens``).

Faults are the OpenAI fake's (``fake_provider.Fault``), answered in Anthropic's
shape; ``status: 529`` is Anthropic's "overloaded". ``GET /v1/models`` lists one model.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

from aiohttp import web

from llmgw_dev import fake_provider

_IDS = itertools.count(1)
_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


class FakeAnthropic(fake_provider.FakeProvider):
    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_get("/v1/models", self._anthropic_models)
        app.router.add_post("/_control", self._control_plan)
        app.router.add_delete("/_control", self._control_clear)
        app.router.add_get("/_control/requests", self._control_requests)
        return app

    def error_answer(
        self, status: int, retry_after: float | None, message: str | None = None
    ) -> web.Response:
        kind = _TYPES.get(status, "api_error")
        body = {
            "type": "error",
            "error": {"type": kind, "message": message or f"fake anthropic failure {status}"},
        }
        headers = {"retry-after": f"{retry_after:g}"} if retry_after is not None else {}
        return web.json_response(body, status=status, headers=headers)

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body, fault = await self.receive(request)
        early = await self.act(request, fault)
        if early is not None:
            return early
        if not request.headers.get("x-api-key"):
            return self.error_answer(401, None, "x-api-key header is required")
        if not request.headers.get("anthropic-version"):
            return self.error_answer(400, None, "anthropic-version header is required")
        if not isinstance(body, dict) or "model" not in body or not isinstance(body.get("max_tokens"), int):
            return self.error_answer(400, None, "model and max_tokens are required")
        prompt = self.words(body.get("messages")) + self.words(body.get("system"))
        words = self.reply.split()[: body["max_tokens"]]  # it stops at max_tokens, one word a token
        stop = "max_tokens" if len(words) < len(self.reply.split()) else "end_turn"
        message = {
            "id": f"msg_fake{next(_IDS):06d}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "content": [{"type": "text", "text": " ".join(words)}],
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": prompt, "output_tokens": len(words)},
        }
        if body.get("stream") is not True:
            return web.json_response(message)
        return await self._stream_message(request, message, words, fault)

    async def _stream_message(
        self, request: web.Request, message: dict[str, Any], words: list[str], fault: fake_provider.Fault
    ) -> web.StreamResponse:
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await out.prepare(request)

        async def send(kind: str, **data: Any) -> None:
            await out.write(f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode())

        start = {
            **message,
            "content": [],
            "stop_reason": None,
            "usage": {"input_tokens": message["usage"]["input_tokens"], "output_tokens": 1},
        }
        self.started_streams += 1
        try:
            await send("message_start", message=start)
            await send("content_block_start", index=0, content_block={"type": "text", "text": ""})
            await send("ping")
            for i, word in enumerate(words):
                await send(
                    "content_block_delta",
                    index=0,
                    delta={"type": "text_delta", "text": (" " if i else "") + word},
                )
                if i == 0 and fault.stall_mid_stream:
                    await asyncio.sleep(fault.stall_mid_stream)
                if fault.chunk_delay:
                    await asyncio.sleep(fault.chunk_delay)
            await send("content_block_stop", index=0)
            await send(
                "message_delta",
                delta={"stop_reason": message["stop_reason"], "stop_sequence": None},
                usage={"output_tokens": len(words)},
            )
            await send("message_stop")
            await out.write_eof()
        except (asyncio.CancelledError, ConnectionResetError):
            self.cancelled_streams += 1
            raise
        self.finished_streams += 1
        return out

    async def _anthropic_models(self, request: web.Request) -> web.Response:
        model = {
            "type": "model",
            "id": "claude-fake",
            "display_name": "Claude Fake",
            "created_at": "2025-01-01T00:00:00Z",
        }
        return web.json_response(
            {"data": [model], "has_more": False, "first_id": "claude-fake", "last_id": "claude-fake"}
        )


def main(argv: list[str] | None = None) -> None:
    fake_provider.main(argv, FakeAnthropic)


if __name__ == "__main__":
    main()

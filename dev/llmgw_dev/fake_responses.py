"""The fake provider's Responses API and relayed endpoints (see ``fake_provider``).

Responses, as OpenAI serves them: ``POST /v1/responses`` answers a ``response``
object (``usage`` with ``input_tokens``/``output_tokens``/``total_tokens``) or,
streamed, the typed events in OpenAI's order (``response.created``,
``response.in_progress``, ``response.output_item.added``,
``response.content_part.added``, one ``response.output_text.delta`` per word,
``response.output_text.done``, ``response.content_part.done``,
``response.output_item.done``, ``response.completed`` carrying the usage, or
``response.incomplete`` when ``max_output_tokens`` cut the reply, one word a token),
each with its ``sequence_number``. A response is stored unless ``store`` is
false; a ``previous_response_id`` this fake did not store is a 404 (as at a
provider that never saw it), and ``GET``/``DELETE /v1/responses/{id}`` read
and delete stored ones.

Relayed endpoints answer small realistic bodies: ``audio/transcriptions`` and
``files`` read their multipart body part by part (never whole) and report the
bytes and field names they saw; ``images/generations``, ``moderations`` and
``GET /v1/files`` answer JSON.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import json
import time
from typing import Any, Protocol

import aiohttp
from aiohttp import web


class Fault(Protocol):
    stall_mid_stream: float
    chunk_delay: float


class FakeProvider(Protocol):
    """What this part uses of the fake provider that owns it (``fake_provider.FakeProvider``)."""

    reply: str
    started_streams: int
    finished_streams: int
    cancelled_streams: int

    async def receive(self, request: web.Request) -> tuple[Any, Any]: ...
    async def act(self, request: web.Request, fault: Any) -> web.StreamResponse | None: ...
    def take_fault(self) -> Any: ...
    def error_answer(
        self, status: int, retry_after: float | None, message: str | None = None
    ) -> web.Response: ...
    def words(self, value: object) -> int: ...


MAX_STORED = 10_000
_IDS = itertools.count(1)


class Responses:
    """The Responses API of one fake provider, with the responses it stored."""

    def __init__(self, fake: FakeProvider) -> None:
        self.fake = fake
        self.stored: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self.uploads: list[dict[str, Any]] = []  # what each multipart request held (sizes, field names)
        self.arrived = 0  # multipart bytes read so far, across requests: tests see an upload arrive
        self._arrival = asyncio.Condition()

    async def wait_for_bytes(self, count: int) -> None:
        """Until ``count`` multipart bytes were read: a relay holding the body back never gets there."""
        async with self._arrival:
            await self._arrival.wait_for(lambda: self.arrived >= count)

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/responses", self._create)
        app.router.add_get("/v1/responses/{id}", self._get)
        app.router.add_delete("/v1/responses/{id}", self._delete)
        app.router.add_post("/v1/audio/transcriptions", self._multipart(self._transcription))
        app.router.add_post("/v1/files", self._multipart(self._file))
        app.router.add_get("/v1/files", self._files)
        app.router.add_post("/v1/images/generations", self._image)
        app.router.add_post("/v1/moderations", self._moderation)

    async def _create(self, request: web.Request) -> web.StreamResponse:
        body, fault = await self.fake.receive(request)
        early = await self.fake.act(request, fault)
        if early is not None:
            return early
        if not isinstance(body, dict) or "model" not in body:
            return self.fake.error_answer(400, None, "the fake provider needs a JSON body with a model")
        previous = body.get("previous_response_id")
        if previous is not None and previous not in self.stored:
            return self.fake.error_answer(404, None, f"Previous response with id '{previous}' not found.")
        response = self._response(body)
        if body.get("store") is not False:
            self.stored[response["id"]] = response
            while len(self.stored) > MAX_STORED:
                self.stored.popitem(last=False)
        if body.get("stream") is True:
            return await self._stream(request, response, fault)
        return web.json_response(response)

    def _response(self, body: dict[str, Any]) -> dict[str, Any]:
        prompt = self.fake.words(body.get("input")) + self.fake.words(body.get("instructions"))
        words = self.fake.reply.split()
        limit = body.get("max_output_tokens")
        cut = isinstance(limit, int) and len(words) > limit  # a provider stops at the limit, one word a token
        if cut:
            words = words[:limit]
        text = " ".join(words)
        completion = len(words)
        rid = f"resp_fake{next(_IDS):06d}"
        return {
            "id": rid,
            "object": "response",
            "created_at": int(time.time()),
            "status": "incomplete" if cut else "completed",
            "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
            "model": body["model"],
            "output": [
                {
                    "type": "message",
                    "id": f"msg_{rid}",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}],
                }
            ],
            "parallel_tool_calls": True,
            "previous_response_id": body.get("previous_response_id"),
            "store": body.get("store") is not False,
            "tool_choice": "auto",
            "tools": [],
            "usage": {
                "input_tokens": prompt,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": completion,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": prompt + completion,
            },
        }

    async def _stream(
        self, request: web.Request, response: dict[str, Any], fault: Fault
    ) -> web.StreamResponse:
        out = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await out.prepare(request)
        sequence = itertools.count()
        message = response["output"][0]
        start = {**response, "status": "in_progress", "output": [], "usage": None}
        empty_item = {**message, "status": "in_progress", "content": []}
        part = {"type": "output_text", "text": "", "annotations": []}
        ids = {"item_id": message["id"], "output_index": 0, "content_index": 0}

        async def send(kind: str, **data: Any) -> None:
            event = {"type": kind, **data, "sequence_number": next(sequence)}
            await out.write(f"event: {kind}\ndata: {json.dumps(event)}\n\n".encode())

        self.fake.started_streams += 1
        try:
            await send("response.created", response=start)
            await send("response.in_progress", response=start)
            await send("response.output_item.added", output_index=0, item=empty_item)
            await send("response.content_part.added", part=part, **ids)
            text = message["content"][0]["text"]
            for i, word in enumerate(text.split()):
                await send("response.output_text.delta", delta=(" " if i else "") + word, **ids)
                if i == 0 and fault.stall_mid_stream:
                    await asyncio.sleep(fault.stall_mid_stream)
                if fault.chunk_delay:
                    await asyncio.sleep(fault.chunk_delay)
            await send("response.output_text.done", text=text, **ids)
            await send("response.content_part.done", part={**part, "text": text}, **ids)
            await send("response.output_item.done", output_index=0, item=message)
            await send(f"response.{response['status']}", response=response)
            await out.write_eof()
        except (asyncio.CancelledError, ConnectionResetError):
            self.fake.cancelled_streams += 1
            raise
        self.fake.finished_streams += 1
        return out

    async def _get(self, request: web.Request) -> web.Response:
        await self.fake.receive(request)
        found = self.stored.get(request.match_info["id"])
        if found is None:
            return self.fake.error_answer(
                404, None, f"Response with id '{request.match_info['id']}' not found."
            )
        return web.json_response(found)

    async def _delete(self, request: web.Request) -> web.Response:
        await self.fake.receive(request)
        rid = request.match_info["id"]
        if self.stored.pop(rid, None) is None:
            return self.fake.error_answer(404, None, f"Response with id '{rid}' not found.")
        return web.json_response({"id": rid, "object": "response", "deleted": True})

    def _multipart(self, answer: Any) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            fault = self.fake.take_fault()
            early = await self.fake.act(request, fault)
            if early is not None:
                return early
            fields: dict[str, Any] = {}
            sizes: dict[str, int] = {}
            reader = await request.multipart()
            async for part in reader:
                if not isinstance(part, aiohttp.BodyPartReader) or part.name is None:
                    continue
                size = 0
                # Small pieces, so what arrived is seen soon (a part reader looks one piece ahead).
                while chunk := await part.read_chunk(4096):
                    size += len(chunk)
                    async with self._arrival:
                        self.arrived += len(chunk)
                        self._arrival.notify_all()
                    if part.filename is None and size <= 1024:
                        fields[part.name] = fields.get(part.name, "") + chunk.decode("utf-8", "replace")
                sizes[part.name] = size
            seen = {"path": request.path, "headers": dict(request.headers), "fields": fields, "sizes": sizes}
            self.uploads.append(seen)
            return web.json_response(answer(fields, sizes))

        return handle

    @staticmethod
    def _transcription(fields: dict[str, Any], sizes: dict[str, int]) -> dict[str, Any]:
        return {
            "text": f"{sizes.get('file', 0)} bytes of audio heard",
            "usage": {"type": "duration", "seconds": 1},
        }

    @staticmethod
    def _file(fields: dict[str, Any], sizes: dict[str, int]) -> dict[str, Any]:
        return {
            "id": f"file-fake{next(_IDS):06d}",
            "object": "file",
            "bytes": sizes.get("file", 0),
            "created_at": int(time.time()),
            "filename": "upload",
            "purpose": fields.get("purpose", "batch"),
            "status": "processed",
        }

    async def _files(self, request: web.Request) -> web.Response:
        await self.fake.receive(request)
        return web.json_response({"object": "list", "data": [], "has_more": False})

    async def _image(self, request: web.Request) -> web.StreamResponse:
        _body, fault = await self.fake.receive(request)
        early = await self.fake.act(request, fault)
        if early is not None:
            return early
        return web.json_response({"created": int(time.time()), "data": [{"b64_json": "iVBORw0KGgo="}]})

    async def _moderation(self, request: web.Request) -> web.StreamResponse:
        body, fault = await self.fake.receive(request)
        early = await self.fake.act(request, fault)
        if early is not None:
            return early
        categories = {"hate": False, "violence": False}
        result = {
            "flagged": False,
            "categories": categories,
            "category_scores": dict.fromkeys(categories, 0.0),
        }
        model = body.get("model", "omni-moderation-latest") if isinstance(body, dict) else ""
        return web.json_response({"id": f"modr-{next(_IDS)}", "model": model, "results": [result]})

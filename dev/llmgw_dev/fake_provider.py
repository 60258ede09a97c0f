"""A fake OpenAI-compatible provider on loopback that fails on demand.

Serves ``/v1/chat/completions`` (streaming too, with
``stream_options.include_usage``), ``/v1/completions``, ``/v1/embeddings``,
the Responses API and relayed endpoints (``fake_responses``),
``GET /v1/models`` and the Azure OpenAI form
``/openai/deployments/{deployment}/{endpoint}``. Answers carry a realistic
``usage`` (whitespace word counts). Every request is recorded (path, query,
headers, JSON body) for assertions.

Faults are planned in order; each request takes the first pending fault. A
fault is a JSON object (or ``Fault``) with any of:

- ``status`` (int) and optional ``retryAfter`` (seconds, sets ``Retry-After``):
  answer with that status and an OpenAI-shaped error body
- ``reset`` (bool): drop the connection without answering
- ``stall`` (s): wait before sending headers
- ``stallMidStream`` (s): for streams, wait after the first chunk
- ``cutMidStream`` (bool): for streams, drop the connection after the first chunk
- ``stallFirstEvent`` (s): for streams, wait after the headers, before the first event
- ``resetFirstEvent`` (bool): for streams, drop the connection after the headers
- ``errorEvent`` (bool): for streams, send an in-band error event as the first event
- ``code`` (str): the error body's ``code`` for a ``status`` fault (default: the status)
- ``chunkDelay`` (s): for streams, wait between chunks
- ``latency`` (s): wait before answering (like ``stall``, but meant for load tests)
- ``times`` (int, default 1; 0 = every request from now on)

In process::

    fake = FakeProvider()
    fake.plan(Fault(status=503, times=2))
    runner = web.AppRunner(fake.app())   # or pytest-aiohttp's aiohttp_server(fake.app())
    fake.requests[-1].headers["Authorization"]

Over HTTP (for the benchmark and the demo)::

    POST   /_control            {"faults": [{"status": 429, "retryAfter": 2, "times": 3}]}
    GET    /_control/requests   recorded requests, oldest first
    DELETE /_control            clear faults and records

Run it: ``python -m llmgw_dev.fake_provider --port 8000 [--host 127.0.0.1] [--no-record]``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import dataclasses
import json
import signal
import time
from typing import Any

from aiohttp import web

from llmgw_dev import fake_responses

REPLY = "Hello from the fake provider. It answers every question the same way."


@dataclasses.dataclass
class Fault:
    status: int | None = None
    retry_after: float | None = None
    reset: bool = False
    stall: float = 0.0
    stall_mid_stream: float = 0.0
    chunk_delay: float = 0.0
    latency: float = 0.0
    times: int = 1
    stall_first_event: float = 0.0
    reset_first_event: bool = False
    error_event: bool = False
    code: str | None = None
    cut_mid_stream: bool = False

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Fault:
        names = {
            "status": "status",
            "retryAfter": "retry_after",
            "reset": "reset",
            "stall": "stall",
            "stallMidStream": "stall_mid_stream",
            "chunkDelay": "chunk_delay",
            "latency": "latency",
            "times": "times",
            "stallFirstEvent": "stall_first_event",
            "resetFirstEvent": "reset_first_event",
            "errorEvent": "error_event",
            "code": "code",
            "cutMidStream": "cut_mid_stream",
        }
        unknown = set(data) - set(names)
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        return cls(**{names[k]: v for k, v in data.items()})


@dataclasses.dataclass
class Received:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any


def words(value: object) -> int:
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(words(v) for v in value)
    if isinstance(value, dict):
        return sum(words(v) for v in value.values())
    return 0


_words = words  # the name the module used before words became public


class FakeProvider:
    def __init__(self, reply: str = REPLY, record: bool = True, max_records: int = 10_000) -> None:
        self.reply = reply
        self.record = record
        self.requests: collections.deque[Received] = collections.deque(maxlen=max_records)
        self.faults: list[Fault] = []
        self.started_streams = 0
        self.finished_streams = 0
        self.cancelled_streams = 0
        self.responses = fake_responses.Responses(self)

    def plan(self, *faults: Fault) -> None:
        self.faults.extend(faults)

    def clear(self) -> None:
        self.faults.clear()
        self.requests.clear()

    words = staticmethod(words)

    def take_fault(self) -> Fault:
        return self.next_fault() or Fault()

    def next_fault(self) -> Fault | None:
        if not self.faults:
            return None
        fault = self.faults[0]
        if fault.times > 0:
            fault.times -= 1
            if fault.times == 0:
                self.faults.pop(0)
        return fault

    def app(self) -> web.Application:
        app = web.Application()
        for endpoint in ("chat/completions", "completions", "embeddings"):
            app.router.add_post(f"/v1/{endpoint}", self._handler(endpoint))
            app.router.add_post(f"/openai/deployments/{{deployment}}/{endpoint}", self._handler(endpoint))
        app.router.add_get("/v1/models", self._models)
        self.responses.routes(app)
        app.router.add_post("/_control", self._control_plan)
        app.router.add_delete("/_control", self._control_clear)
        app.router.add_get("/_control/requests", self._control_requests)
        return app

    async def receive(self, request: web.Request) -> tuple[Any, Fault]:
        """Read and record a request (a JSON body decoded), and take its fault."""
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        if self.record:
            self.requests.append(
                Received(request.method, request.path, dict(request.query), dict(request.headers), body)
            )
        return body, self.next_fault() or Fault()

    async def act(self, request: web.Request, fault: Fault) -> web.StreamResponse | None:
        """Carry out ``fault`` before an answer: the error answer it asks for, or None to answer."""
        if fault.reset:
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError  # the handler ends; nothing is written
        if fault.stall or fault.latency:
            await asyncio.sleep(fault.stall + fault.latency)
        if fault.status is not None and fault.status >= 400:
            return self.error_answer(fault.status, fault.retry_after)
        return None

    def error_answer(
        self, status: int, retry_after: float | None, message: str | None = None
    ) -> web.Response:
        return error(status, retry_after, message)

    def _handler(self, endpoint: str) -> Any:
        async def handle(request: web.Request) -> web.StreamResponse:
            raw = await request.read()
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode("utf-8", "replace")
            if self.record:
                self.requests.append(
                    Received(request.method, request.path, dict(request.query), dict(request.headers), body)
                )
            fault = self.next_fault() or Fault()
            if fault.reset:
                assert request.transport is not None
                request.transport.abort()
                raise asyncio.CancelledError  # the handler ends; nothing is written
            if fault.stall or fault.latency:
                await asyncio.sleep(fault.stall + fault.latency)
            if fault.status is not None and fault.status >= 400:
                return error(fault.status, fault.retry_after, code=fault.code)
            if not isinstance(body, dict) or "model" not in body:
                return error(400, None, "the fake provider needs a JSON body with a model")
            model = str(request.match_info.get("deployment") or body["model"])
            if endpoint == "chat/completions" and body.get("stream") is True:
                return await self._stream(request, body, model, fault)
            return web.json_response(self._answer(endpoint, body, model))

        return handle

    def _usage(self, body: dict[str, Any], completion: int) -> dict[str, int]:
        prompt = _words(body.get("messages") or body.get("prompt") or body.get("input"))
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    def _answer(self, endpoint: str, body: dict[str, Any], model: str) -> dict[str, Any]:
        created = int(time.time())
        if endpoint == "embeddings":
            inputs = body.get("input")
            items = inputs if isinstance(inputs, list) else [inputs]
            data = [
                {"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]} for i in range(len(items))
            ]
            return {"object": "list", "data": data, "model": model, "usage": self._usage(body, 0)}
        completion = len(self.reply.split())
        if endpoint == "completions":
            choice: dict[str, Any] = {
                "index": 0,
                "text": self.reply,
                "finish_reason": "stop",
                "logprobs": None,
            }
            kind = "text_completion"
        else:
            message = {"role": "assistant", "content": self.reply}
            choice = {"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}
            kind = "chat.completion"
        return {
            "id": f"fake-{created}",
            "object": kind,
            "created": created,
            "model": model,
            "choices": [choice],
            "usage": self._usage(body, completion),
        }

    async def _stream(
        self, request: web.Request, body: dict[str, Any], model: str, fault: Fault
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)  # a StreamResponse sends its headers here
        if fault.reset_first_event:
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError
        if fault.stall_first_event:
            await asyncio.sleep(fault.stall_first_event)
        if fault.error_event:
            error = {
                "error": {"message": "fake in-band failure", "type": "server_error", "code": "overloaded"}
            }
            await response.write(b"data: " + json.dumps(error).encode() + b"\n\n")
            await response.write_eof()
            return response
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        created = int(time.time())
        words = self.reply.split()
        self.started_streams += 1
        try:
            for i, word in enumerate(words):
                delta = {"content": (" " if i else "") + word}
                if i == 0:
                    delta["role"] = "assistant"
                last = i == len(words) - 1
                chunk: dict[str, Any] = {
                    "id": f"fake-{created}",
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": "stop" if last else None}],
                }
                if include_usage:
                    chunk["usage"] = None
                await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
                if i == 0 and fault.stall_mid_stream:
                    await asyncio.sleep(fault.stall_mid_stream)
                if i == 0 and fault.cut_mid_stream:
                    assert request.transport is not None
                    request.transport.abort()
                    raise asyncio.CancelledError
                if fault.chunk_delay:
                    await asyncio.sleep(fault.chunk_delay)
            if include_usage:
                final = {
                    "id": f"fake-{created}",
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [],
                    "usage": self._usage(body, len(words)),
                }
                await response.write(b"data: " + json.dumps(final).encode() + b"\n\n")
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
        except (asyncio.CancelledError, ConnectionResetError):
            self.cancelled_streams += 1
            raise
        self.finished_streams += 1
        return response

    async def _models(self, request: web.Request) -> web.Response:
        data = [{"id": "fake-model", "object": "model", "created": 0, "owned_by": "fake"}]
        return web.json_response({"object": "list", "data": data})

    async def _control_plan(self, request: web.Request) -> web.Response:
        try:
            data = await request.json()
            faults = [Fault.from_json(f) for f in data.get("faults", [])]
        except (ValueError, TypeError, AttributeError) as exc:
            return error(400, None, f"bad fault plan: {exc}")
        self.plan(*faults)
        return web.json_response({"pending": len(self.faults)})

    async def _control_clear(self, request: web.Request) -> web.Response:
        self.clear()
        return web.json_response({"pending": 0})

    async def _control_requests(self, request: web.Request) -> web.Response:
        return web.json_response([dataclasses.asdict(r) for r in self.requests])


def error(
    status: int, retry_after: float | None, message: str | None = None, code: str | None = None
) -> web.Response:
    kind = (
        "rate_limit_error" if status == 429 else "server_error" if status >= 500 else "invalid_request_error"
    )
    body = {
        "error": {
            "message": message or f"fake provider failure {status}",
            "type": kind,
            "code": code or str(status),
        }
    }
    headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
    return web.json_response(body, status=status, headers=headers)


_error = error  # idem


CONTROL_HELP = """\
control API, on the same port:
  POST   /_control            plan faults, taken in order by the next requests:
                              {"faults": [{"status": 429, "retryAfter": 2, "times": 3}]}
                              a fault has any of: status, retryAfter (s), reset (drop the
                              connection), stall (s before headers), stallMidStream (s),
                              cutMidStream (drop it after the first chunk),
                              chunkDelay (s between stream chunks), latency (s),
                              stallFirstEvent (s after a stream's headers),
                              resetFirstEvent (drop it after the headers), errorEvent
                              (an error event first), code (the error's code),
                              times (default 1; 0 = every request from now on)
  GET    /_control/requests   the requests received, oldest first (path, headers, body)
  DELETE /_control            clear the faults and the recorded requests

It serves /v1/chat/completions (streaming too), /v1/completions, /v1/embeddings,
/v1/responses (streaming too; GET and DELETE /v1/responses/{id}), audio/transcriptions,
images/generations, moderations and files, GET /v1/models and Azure's
/openai/deployments/{deployment}/{endpoint}, with any key. `python -m
llmgw_dev.fake_anthropic` takes the same options and serves Anthropic's /v1/messages.
"""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m llmgw_dev.fake_provider",
        description="Run the fake OpenAI-compatible provider on loopback; it answers every question "
        "the same way and fails on demand.",
        epilog=CONTROL_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument(
        "--port",
        type=int,
        default=8000,
        help="port to listen on, 0 for any (default: %(default)s; the samples' policies use 18080 and 18081)",
    )
    p.add_argument("--no-record", action="store_true", help="do not keep received requests (load tests)")
    return p


def main(argv: list[str] | None = None, make: type[FakeProvider] | None = None) -> None:
    """Run a fake; ``make`` picks which (``fake_anthropic.main`` passes its own)."""
    make = make or FakeProvider
    args = parser().parse_args(argv)
    fake = make(record=not args.no_record)

    async def serve() -> None:
        # SIGTERM is how benchmarks and tests stop it: a clean exit, not death by signal. The
        # handler is in place before the "listening" line, which is what callers wait for.
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        runner = web.AppRunner(fake.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, args.host, args.port)
        await site.start()
        host, port = runner.addresses[0][:2]
        print(json.dumps({"msg": "listening", "address": f"{host}:{port}"}), flush=True)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    try:
        import uvloop

        uvloop.run(serve())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

"""What reading a typed stream on the way costs: ``python -m llmgw_dev.bench_streams``.

Feeds one Responses stream (``response.created``, 200 ``response.output_text.delta``
events, ``response.completed``) through ``apis.events.EventReader`` (with and without
the text kept for the estimate) and, for scale, through ``sse.UsageReader``, the
plain reader of a chat stream. Prints the fastest of five rounds per event; no
verdict, the figures swing with the machine's load (compare them side by side).
"""

from __future__ import annotations

import json
import timeit
from collections.abc import Callable

from llmgw_proxy.apis import events
from llmgw_proxy.upstream import sse

DELTAS = 200


def stream() -> list[bytes]:
    def event(kind: str, seq: int, **data: object) -> bytes:
        return (
            f"event: {kind}\ndata: {json.dumps({'type': kind, 'sequence_number': seq, **data})}\n\n".encode()
        )

    done = {"id": "resp_1", "usage": {"input_tokens": 4, "output_tokens": DELTAS, "total_tokens": DELTAS + 4}}
    ids = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    return [
        event("response.created", 0, response={"id": "resp_1", "usage": None}),
        *(event("response.output_text.delta", i + 1, delta=f" word{i}", **ids) for i in range(DELTAS)),
        event("response.completed", DELTAS + 1, response=done),
    ]


def main() -> None:
    parts = stream()

    def typed(text: bool) -> Callable[[], None]:
        def run() -> None:
            reader = events.EventReader(keep=False, text=text)
            for part in parts:
                reader.filter(part)
            reader.finish()
            reader.text()

        return run

    def plain() -> None:
        reader = sse.UsageReader()
        for part in parts:
            reader.feed(part)

    runs = 200
    for name, run in (
        ("EventReader, text kept", typed(True)),
        ("EventReader, no text", typed(False)),
        ("sse.UsageReader (chat)", plain),
    ):
        seconds = min(timeit.repeat(run, number=runs, repeat=5)) / runs
        print(f"{name:24} {seconds * 1e6 / len(parts):6.2f} us per event ({len(parts)} events)")


if __name__ == "__main__":
    main()

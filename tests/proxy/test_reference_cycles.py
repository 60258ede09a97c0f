"""A failed request leaves no reference cycle behind: reference counting frees it when it ends.

The sidecar tunes Python's collector for speed (``server.run.settle_gc``: young
passes every 10,000 allocations, everything loaded at start frozen), so a full
pass runs rarely: under the fault soak, about every half hour. A request that
failed upstream used to end in reference cycles (a caught exception's
traceback holds the frames it passed through, and those frames hold the
exception; a dropped upstream connection and its parser hold each other), and
each kept the whole request (its parsed message, its connection and buffers)
until that pass: the soak's RSS grew through a 10-minute run. Here the
collector is off while real requests fail in each way the soak mixes, then one
pass lists what only it could free; none of it may be the sidecar's.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import gc
import pathlib
import types
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from llmgw_dev import fake_provider, soak
from llmgw_proxy.upstream import http1

if TYPE_CHECKING:
    from conftest import MakeDoc, StartProxy

FAULTS = {
    "5xx": fake_provider.Fault(status=502),
    "reset": fake_provider.Fault(reset=True),
    "stall-before-headers": fake_provider.Fault(stall=10),
    "stall-before-first-event": fake_provider.Fault(stall_first_event=10),
    "reset-at-first-event": fake_provider.Fault(reset_first_event=True),
    "error-event": fake_provider.Fault(error_event=True),
    "cut-mid-stream": fake_provider.Fault(cut_mid_stream=True),
    "stall-mid-stream": fake_provider.Fault(stall_mid_stream=10),
}


@contextlib.contextmanager
def collector_off() -> Iterator[list[Any]]:
    """Yields a list that, after the block, holds what one collector pass found unreachable."""
    found: list[Any] = []
    gc.collect()
    gc.disable()
    try:
        yield found
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        found.extend(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def _sidecar_frame(o: object) -> bool:
    return isinstance(o, types.FrameType) and "llmgw_proxy" in o.f_code.co_filename


def _sidecar_object(o: object) -> bool:
    return type(o).__module__.startswith("llmgw_proxy")


def _names(objects: list[Any]) -> list[tuple[str, int]]:
    def name(o: object) -> str:
        if isinstance(o, types.FrameType):
            return f"frame {o.f_code.co_name} ({pathlib.Path(o.f_code.co_filename).name})"
        return type(o).__qualname__

    return collections.Counter(name(o) for o in objects).most_common(15)


async def _fail_requests(
    start_proxy: StartProxy,
    upstream: str,
    make_doc: MakeDoc,
    fake: fake_provider.FakeProvider,
    fault: fake_provider.Fault,
) -> list[Any]:
    """A plain and a streamed request through retries and a fallback, every upstream try
    meeting ``fault``; what the collector then found unreachable."""
    doc = make_doc(upstream, None)
    provider = {
        "baseUrl": upstream,
        "timeouts": {"connect": 1, "firstByte": 0.3, "firstEvent": 0.3, "streamIdle": 0.3, "total": 2},
        "retry": {"attempts": 2, "baseBackoff": 0.01, "maxBackoff": 0.02},
        "circuitBreaker": {"consecutiveFailures": 3, "openDuration": 1},
    }
    doc["providers"] = {"a": provider, "b": provider}
    doc["routes"] = [{"model": "*", "targets": [{"provider": "a"}, {"provider": "b"}]}]
    proxy = await start_proxy(doc)
    client = proxy.async_client(timeout=30)
    fake.plan(dataclasses.replace(fault, times=0))  # every try, retries and fallback included
    with collector_off() as found:
        outcomes = [await soak.one(client, stream) for stream in (False, True, False, True)]
    # Each ended as the soak requires: the check below is about requests that failed readably.
    assert set(outcomes) <= {soak.ERROR_ANSWER, soak.IN_BAND, soak.OK}, outcomes
    assert outcomes != [soak.OK] * 4, "the fault never reached a request"
    return found


@pytest.mark.parametrize("fault", list(FAULTS.values()), ids=list(FAULTS))
async def test_a_request_failed_upstream_leaves_no_frame_or_error_to_the_collector(
    start_proxy: StartProxy,
    upstream: str,
    make_doc: MakeDoc,
    fake: fake_provider.FakeProvider,
    fault: fake_provider.Fault,
) -> None:
    found = await _fail_requests(start_proxy, upstream, make_doc, fake, fault)
    kept = [
        o for o in found if _sidecar_frame(o) or (_sidecar_object(o) and not isinstance(o, http1._Connection))
    ]
    assert not kept, f"left to the collector: {_names(kept)}"


@pytest.mark.parametrize(
    "fault",
    [FAULTS[name] for name in ("reset", "stall-before-headers", "cut-mid-stream")],
    ids=["reset", "stall-before-headers", "cut-mid-stream"],
)
async def test_an_upstream_connection_dropped_by_a_fault_is_freed_when_it_closes(
    start_proxy: StartProxy,
    upstream: str,
    make_doc: MakeDoc,
    fake: fake_provider.FakeProvider,
    fault: fake_provider.Fault,
) -> None:
    found = await _fail_requests(start_proxy, upstream, make_doc, fake, fault)
    kept = [o for o in found if isinstance(o, http1._Connection)]
    assert not kept, f"{len(kept)} closed upstream connections left to the collector"

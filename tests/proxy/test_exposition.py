"""The sidecar's own Prometheus text writer writes what prometheus_client writes, byte for byte.

``telemetry.exposition`` replaces ``prometheus_client.generate_latest`` in the
sidecar (which no longer imports prometheus_client, test_sidecar_imports.py);
prometheus_client stays the reference here: arbitrary families, label values
that need escaping, values Go spells with an exponent, and a real sidecar's
``/metrics`` after traffic through a breaker.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import aiohttp
import prometheus_client
from hypothesis import given
from hypothesis import strategies as st
from openai.types.chat import ChatCompletionMessageParam
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.utils import floatToGoString

from llmgw_dev import fake_provider
from llmgw_proxy.telemetry import exposition

if TYPE_CHECKING:
    import pathlib

    from conftest import Eventually, MakeDoc, StartProxy

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
LABEL_NAMES = ("route", "provider", "model", "status", "a")
values = st.floats(allow_nan=True, allow_infinity=True) | st.integers(0, 10**18)
texts = st.text(st.characters(codec="utf-8"), max_size=12) | st.sampled_from(['"', "\\", "\n", '\\"\n'])


@st.composite
def families(draw: st.DrawFn) -> exposition.Family:
    kind = draw(st.sampled_from([exposition.COUNTER, exposition.GAUGE, exposition.HISTOGRAM]))
    name = "llmgw_" + draw(st.from_regex(r"[a-z][a-z_]{0,10}", fullmatch=True))
    doc = draw(texts)
    labels = draw(st.lists(st.sampled_from(LABEL_NAMES), unique=True, max_size=3))
    family = exposition.Family(name, doc, kind, labels)
    for _ in range(draw(st.integers(0, 3))):
        label_values = [draw(texts) for _ in labels]
        if kind == exposition.HISTOGRAM:
            bounds = draw(st.lists(st.floats(0, 1e9), min_size=1, max_size=4, unique=True))
            counts = sorted(
                draw(st.lists(st.integers(0, 10**9), min_size=len(bounds) + 1, max_size=len(bounds) + 1))
            )
            buckets = [(repr(b), float(c)) for b, c in zip(sorted(bounds), counts, strict=False)]
            family.add_histogram(label_values, [*buckets, ("+Inf", float(counts[-1]))], draw(values))
        else:
            family.add(label_values, draw(values))
    return family


@given(st.lists(families(), max_size=4, unique_by=lambda f: f.name))
def test_render_writes_what_prometheus_client_writes(drawn: list[exposition.Family]) -> None:
    expected = prometheus_client.generate_latest(exposition.registry(lambda: drawn))
    assert exposition.render(drawn) == expected


@given(values)
def test_values_are_spelled_as_go_spells_them(value: float) -> None:
    assert exposition.number(value) == floatToGoString(value)  # type: ignore[no-untyped-call]


def test_escaped_label_values_read_back_as_written() -> None:
    family = exposition.counter("llmgw_things", 'Things "quoted" \\ and\nsplit.', ["route"])
    family.add(['a"b\\c\nd'], 3)
    (parsed,) = text_string_to_metric_families(exposition.render([family]).decode())
    assert parsed.documentation == 'Things "quoted" \\ and\nsplit.'
    assert [(s.name, s.labels, s.value) for s in parsed.samples] == [
        ("llmgw_things_total", {"route": 'a"b\\c\nd'}, 3.0)
    ]
    assert math.isnan(float(exposition.number(float("nan"))))


async def test_a_real_sidecars_metrics_are_what_prometheus_client_writes_for_them(
    start_proxy: StartProxy,
    make_doc: MakeDoc,
    upstream: str,
    key_file: pathlib.Path,
    fake: fake_provider.FakeProvider,
    http: aiohttp.ClientSession,
    eventually: Eventually,
) -> None:
    doc = make_doc(upstream, key_file)
    doc["providers"]["fake"]["circuitBreaker"] = {"consecutiveFailures": 2, "openDuration": 60}
    proxy = await start_proxy(doc)
    await proxy.async_client().chat.completions.create(model="m", messages=MESSAGES)
    stream = await proxy.async_client().chat.completions.create(model="m", messages=MESSAGES, stream=True)
    assert [chunk async for chunk in stream]
    fake.plan(fake_provider.Fault(status=503, times=2))
    for _ in range(2):
        async with http.post(
            proxy.url + "/v1/chat/completions", json={"model": "m", "messages": MESSAGES}
        ) as r:
            assert r.status == 503
    # A request is counted as its handler ends, which may be just after its caller has the answer.
    labels = {"route": "*", "provider": "fake", "model": "other"}
    await eventually(
        lambda: (
            proxy.sample("llmgw_requests_total", **labels, status="503") == 2
            and proxy.sample("llmgw_in_flight_requests") == 0
        )
    )
    async with http.get(proxy.admin_url + "/metrics") as resp:
        assert resp.headers["Content-Type"] == exposition.CONTENT_TYPE
        body = await resp.read()
    assert body == prometheus_client.generate_latest(proxy.metrics.registry)
    assert b'llmgw_breaker_state{provider="fake"} 2.0\n' in body
    assert b"llmgw_time_to_first_token_seconds_count" in body

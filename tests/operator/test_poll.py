"""The poller's thin parts: which pods it asks, and what a bad or slow answer counts as."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import kopf
import pytest
import yaml
from aiohttp import web
from aiohttp.pytest_plugin import AiohttpServer
from hypothesis import given
from hypothesis import strategies as st

from llmgw_operator import cache, kube, poll, sidecars
from llmgw_operator.render import dataplane, injection, names
from llmgw_proxy import status


def pod(name: str, ip: str | None, ready: bool = True, deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    st: dict[str, Any] = {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    if ip:
        st["podIP"] = ip
    return {"metadata": meta, "status": st}


def test_only_ready_pods_with_an_ip_that_are_not_being_deleted_are_asked() -> None:
    pods = [
        pod("b", "10.0.0.2"),
        pod("a", "10.0.0.1"),
        pod("no-ip", None),
        pod("unready", "10.0.0.3", ready=False),
        pod("going", "10.0.0.4", deleting=True),
        {"metadata": {"name": "bare"}},
    ]
    assert poll.ready_pod_ips(pods) == [("a", "10.0.0.1"), ("b", "10.0.0.2")]


_pods = st.lists(
    st.fixed_dictionaries(
        {
            "metadata": st.fixed_dictionaries(
                {"name": st.sampled_from(["a", "b", "c"])},
                optional={
                    "annotations": st.dictionaries(
                        st.sampled_from(
                            [injection.INJECTED_ANNOTATION, names.RESTART_HASH_ANNOTATION, "other/x"]
                        ),
                        st.sampled_from(["gw", "other", "h1", "h2"]),
                    ),
                    "deletionTimestamp": st.just("2026-01-01T00:00:00Z"),
                    "managedFields": st.just([{"manager": "kubelet"}]),
                },
            ),
            "spec": st.just({"containers": [{"name": "app", "image": "x"}]}),
            "status": st.fixed_dictionaries(
                {},
                optional={
                    "phase": st.sampled_from(["Pending", "Running", "Succeeded", "Failed"]),
                    "podIP": st.sampled_from(["10.0.0.1", "10.0.0.2"]),
                    "conditions": st.lists(
                        st.fixed_dictionaries(
                            {
                                "type": st.sampled_from(["Ready", "PodScheduled"]),
                                "status": st.sampled_from(["True", "False"]),
                            }
                        ),
                        max_size=3,
                    ),
                },
            ),
        }
    ),
    max_size=6,
)


@given(_pods)
def test_a_slim_pod_counts_and_reports_as_the_whole_one(pods: list[dict[str, Any]]) -> None:
    # A round keeps only ``slim`` pods of a namespace's pages; census and the ready pods must not change.
    slimmed = [poll.slim(p) for p in pods]
    assert injection.census(slimmed, "gw") == injection.census(pods, "gw")
    assert poll.ready_pod_ips(slimmed) == poll.ready_pod_ips(pods)


def test_the_admin_port_comes_from_the_spec_or_the_models_default() -> None:
    assert poll.admin_port_of({"proxy": {"adminPort": 19090}}) == 19090
    assert poll.admin_port_of({}) == 9090
    assert poll.admin_port_of({"proxy": "garbage"}) == 9090


async def test_a_report_a_slow_answer_garbage_and_an_oversized_body(aiohttp_server: AiohttpServer) -> None:
    good = status.SidecarStatus(ready=True, generation=1, config_hash="0123456789abcdef")

    async def ok(request: web.Request) -> web.Response:
        return web.Response(body=good.model_dump_json(by_alias=True), content_type="application/json")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(5)
        return await ok(request)

    async def garbage(request: web.Request) -> web.Response:
        return web.Response(body=b'{"ready": "perhaps"}', content_type="application/json")

    async def huge(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * (sidecars.MAX_REPORT_BYTES + 10))

    fetcher = sidecars.Fetcher(timeout=0.5, concurrency=4)
    try:
        answers = []
        for handler in (ok, slow, garbage, huge):
            app = web.Application()
            app.router.add_get("/status", handler)
            server = await aiohttp_server(app)
            assert server.port is not None
            answers.append(await fetcher.status("127.0.0.1", server.port))
        assert answers == [good, None, None, None]
        assert await fetcher.status("not-an-ip", 1) is None
    finally:
        await fetcher.close()


async def test_a_connection_cut_in_the_middle_of_a_list_is_logged_and_the_next_round_lists_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A kube-apiserver SIGKILLed while it answers the round's LIST: the answer starts, then the
    # connection ends mid-body. That left urllib3's ProtocolError, not an ApiError, and it ended the
    # polling task for good (and the operator's cleanup with it: SIGTERM was not honoured).
    lists = 0

    async def cut(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal lists
        await reader.readuntil(b"\r\n\r\n")
        lists += 1
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        writer.write(head + b'20\r\n{"kind": "PodList", "items": [{"met')
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(cut, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = kube.Client(lambda: kopf.ConnectionInfo(server=f"http://127.0.0.1:{port}"))
    fetcher = sidecars.Fetcher(timeout=0.5, concurrency=4)
    poller = poll.Poller(client, fetcher, dataplane.Store(), period=15, on_change=lambda key: None)
    poller.track(("ns", "gw"), 9090)
    try:
        async with server:
            await poller.poll([("ns", "gw")])
            await poller.poll([("ns", "gw")])
    finally:
        await fetcher.close()
        await client.close()
    assert lists >= 2  # the second round asked again
    assert "listing the gateways' pods in namespace ns failed" in caplog.text


async def test_the_rendered_hash_is_the_digest_annotation_and_an_unannotated_config_is_parsed() -> None:
    # The annotation spares a YAML load and a validation per new ConfigMap: at 5,000 gateways the
    # poller spent about a tenth of the operator's busy time parsing configs.
    rendered = {
        "version": 1,
        "providers": {"p": {"baseUrl": "http://127.0.0.1:1", "apiKeyFile": "/k"}},
        "routes": [{"model": "*", "targets": [{"provider": "p"}]}],
    }
    text = yaml.safe_dump(rendered)
    parsed = poll._hash_of(text)
    assert parsed is not None
    store = cache.Store()
    client = cache.CachedClient(connect=None, store=store)
    poller = poll.Poller(client, sidecars.Fetcher(timeout=0.5, concurrency=1), dataplane.Store(),
                         period=15, on_change=lambda key: None)  # fmt: skip
    try:
        for name, annotations, data, expected in (
            ("noted", {names.CONFIG_DIGEST_ANNOTATION: "feedfacecafebeef"}, "not: [yaml", "feedfacecafebeef"),
            ("older", {}, text, parsed),
        ):
            store.observe("ADDED", {
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": names.config_map(name), "namespace": "ns", "resourceVersion": "1",
                             "annotations": annotations},
                "data": {names.CONFIG_KEY: data},
            })  # fmt: skip
            assert await poller._rendered_hash(("ns", name)) == expected
    finally:
        await poller.fetcher.close()


def test_rounds_come_less_often_than_the_period_only_when_they_asked_more_pods_than_the_rate_allows() -> None:
    assert poll.round_interval(15.0, 0, 100.0) == 15.0
    assert poll.round_interval(15.0, 1500, 100.0) == 15.0
    assert poll.round_interval(15.0, 5000, 100.0) == 50.0


@given(st.lists(st.from_regex(r"[a-z][a-z0-9-]{0,70}", fullmatch=True), max_size=60))
def test_a_soon_round_selects_its_gateways_pods_when_a_selector_can_name_them(gateways: list[str]) -> None:
    selector = poll.selector_for(gateways)
    nameable = 0 < len(gateways) <= poll.SELECT_MAX and all(len(g) <= 63 for g in gateways)
    if not nameable:
        assert selector is None  # the whole namespace's labelled pods, as a full round
        return
    assert selector is not None
    label, _, values = selector.partition(" in ")
    assert label == names.GATEWAY_LABEL
    assert values.startswith("(") and values.endswith(")")
    assert values[1:-1].split(",") == sorted(set(gateways))


@given(st.lists(st.from_regex(r"[a-z][a-z0-9-]{0,70}", fullmatch=True), max_size=1100, unique=True))
def test_a_large_soon_round_lists_its_gateways_pods_in_chunks_not_the_whole_namespace(
    gateways: list[str],
) -> None:
    # Thousands of new gateways' Deployments turning available made soon rounds of more than 50:
    # each listed every pod of the namespace, and decoding them took 45 % of the operator's time.
    lists = poll.selections(gateways)
    nameable = all(len(g) <= 63 for g in gateways)
    chunks = -(-len(gateways) // poll.SELECT_MAX)
    if not gateways:
        assert lists == []
        return
    if not nameable or chunks > poll.SELECT_LISTS:
        assert lists == [(gateways, None)]  # the namespace's labelled pods, as a full round
        return
    assert [g for chunk, _ in lists for g in chunk] == gateways  # each gateway in one LIST
    for chunk, selector in lists:
        assert 0 < len(chunk) <= poll.SELECT_MAX
        assert selector == poll.selector_for(chunk)


async def test_a_soon_round_of_120_gateways_lists_their_pods_in_three_named_lists(
    aiohttp_server: AiohttpServer,
) -> None:
    selectors: list[str] = []

    async def pods(request: web.Request) -> web.Response:
        selector = request.query.get("labelSelector", "")
        selectors.append(selector)
        _, _, values = selector.partition(" in ")
        named = values.strip("()").split(",") if values else [f"gw-{i}" for i in range(500)]
        items = [pod(f"{gw}-pod", None) for gw in named]
        for gw, item in zip(named, items, strict=True):
            item["metadata"]["labels"] = {names.GATEWAY_LABEL: gw}
        return web.json_response({"kind": "PodList", "metadata": {}, "items": items})

    app = web.Application()
    app.router.add_get("/api/v1/namespaces/ns/pods", pods)
    api = await aiohttp_server(app)
    client = kube.Client(lambda: kopf.ConnectionInfo(server=str(api.make_url(""))))
    store = dataplane.Store()
    poller = poll.Poller(client, sidecars.Fetcher(timeout=0.5, concurrency=4), store, period=15,
                         on_change=lambda key: None)  # fmt: skip
    keys = [("ns", f"gw-{i}") for i in range(120)]
    for key in keys:
        poller.track(key, 9090)
    try:
        await poller.poll(keys, selective=True)
    finally:
        await poller.fetcher.close()
        await client.close()
    assert len(selectors) == 3 and all(" in (" in s for s in selectors), selectors
    assert sorted(g for s in selectors for g in s.partition(" in ")[2].strip("()").split(",")) == sorted(
        k[1] for k in keys
    )
    assert set(store.observations) == set(keys)  # each gateway's round saw its pod


async def test_a_round_polls_as_many_gateways_at_once_as_the_fetcher_has_requests(
    aiohttp_server: AiohttpServer,
) -> None:
    # 300 gateways of one namespace, a ready pod each: a task per gateway held each one's pods
    # and coroutines for the whole round (5,000 at once at scale).
    gateways = [f"gw-{i}" for i in range(300)]
    items = []
    for gw in gateways:
        p = pod(f"{gw}-pod", "127.0.0.1")
        p["metadata"]["labels"] = {names.GATEWAY_LABEL: gw}
        items.append(p)
    body = json.dumps({"kind": "PodList", "metadata": {}, "items": items}).encode()

    async def api(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        writer.write(head.encode() + body)
        await writer.drain()
        writer.close()

    tasks_seen: list[int] = []
    good = status.SidecarStatus(ready=True, generation=1, config_hash="0123456789abcdef")

    async def report(request: web.Request) -> web.Response:
        tasks_seen.append(len(asyncio.all_tasks()))
        return web.Response(body=good.model_dump_json(by_alias=True), content_type="application/json")

    app = web.Application()
    app.router.add_get("/status", report)
    sidecar = await aiohttp_server(app)
    assert sidecar.port is not None
    server = await asyncio.start_server(api, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    client = kube.Client(lambda: kopf.ConnectionInfo(server=url))
    fetcher = sidecars.Fetcher(timeout=5, concurrency=4)
    store = dataplane.Store()
    poller = poll.Poller(client, fetcher, store, period=15, on_change=lambda key: None)
    keys = [("ns", gw) for gw in gateways]
    for key in keys:
        poller.track(key, sidecar.port)
    try:
        async with server:
            await poller.poll(keys)
    finally:
        await fetcher.close()
        await client.close()
    assert len(tasks_seen) == len(gateways)  # every pod was asked
    assert all(store.observations[k].pods == 1 for k in keys)
    # The fetcher's 4 gateways, the server's handlers and the test's own: not one per gateway.
    assert max(tasks_seen) < 40, max(tasks_seen)

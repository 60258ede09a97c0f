"""kube.Client's transport and login.py against real sockets: concurrency, re-login, resent requests."""

from __future__ import annotations

import asyncio
import json
import logging
import pathlib
import subprocess
import sys
from collections.abc import Awaitable, Callable, Mapping

import aiohttp
import kopf
import pytest
from aiohttp import web
from aiohttp.pytest_plugin import AiohttpServer

from llmgw_operator import kube, login, workqueue

# A deadline for awaiting what must happen; reaching it fails the test.
DEADLINE = 10.0


def at(url: str, token: str | None = None) -> Callable[[], kopf.ConnectionInfo]:
    return lambda: kopf.ConnectionInfo(server=url, token=token)


async def test_every_pass_in_flight_has_its_request_sent_at_once(aiohttp_server: AiohttpServer) -> None:
    # Two queues of workqueue.WORKERS passes, each in a request at the same moment. Each answer
    # waits until all have arrived: a pool smaller than that leaves some unsent, and they time out.
    in_flight = 2 * workqueue.WORKERS
    arrived = 0
    everyone = asyncio.Event()

    async def held(request: web.Request) -> web.Response:
        nonlocal arrived
        arrived += 1
        if arrived == in_flight:
            everyone.set()
        try:
            await asyncio.wait_for(everyone.wait(), DEADLINE)
        except TimeoutError:
            return web.json_response({"message": f"only {arrived} arrived"}, status=503)
        return web.json_response({"kind": "ConfigMap"})

    app = web.Application()
    app.router.add_get("/api/v1/namespaces/ns/configmaps/{name}", held)
    server = await aiohttp_server(app)
    client = kube.Client(at(str(server.make_url(""))))
    try:
        found = await asyncio.gather(*(client.get("ConfigMap", "ns", f"c{i}") for i in range(in_flight)))
    finally:
        await client.close()
    assert found == [{"kind": "ConfigMap"}] * in_flight
    assert client.reads == in_flight


async def test_a_401_logs_in_again_once_and_sends_the_new_token(aiohttp_server: AiohttpServer) -> None:
    # A service account's token is rotated on disk; the next login reads the new one.
    seen: list[str] = []

    async def version(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        if request.headers.get("Authorization") != "Bearer rotated":
            return web.json_response({"message": "Unauthorized"}, status=401)
        return web.json_response({"minor": "37"})

    app = web.Application()
    app.router.add_get("/version", version)
    server = await aiohttp_server(app)
    tokens = iter(["expired", "rotated", "never-asked"])
    logins = 0

    def connect() -> kopf.ConnectionInfo:
        nonlocal logins
        logins += 1
        return kopf.ConnectionInfo(server=str(server.make_url("")), token=next(tokens))

    client = kube.Client(connect)
    try:
        assert await client.server_minor() == 37
        assert await client.server_minor() == 37
    finally:
        await client.close()
    assert seen == ["Bearer expired", "Bearer rotated", "Bearer rotated"]
    assert logins == 2


async def test_a_401_after_logging_in_again_is_the_callers_error(aiohttp_server: AiohttpServer) -> None:
    async def refused(request: web.Request) -> web.Response:
        return web.json_response({"message": "Unauthorized"}, status=401)

    app = web.Application()
    app.router.add_get("/version", refused)
    server = await aiohttp_server(app)
    logins = 0

    def connect() -> kopf.ConnectionInfo:
        nonlocal logins
        logins += 1
        return kopf.ConnectionInfo(server=str(server.make_url("")), token="secret-token-value")

    client = kube.Client(connect)
    try:
        with pytest.raises(kube.ApiError) as raised:
            await client.server_minor()
    finally:
        await client.close()
    assert (raised.value.status, raised.value.message) == (401, "Unauthorized")
    assert "secret-token-value" not in str(raised.value)
    assert logins == 2


async def test_the_api_servers_message_names_a_refusal(aiohttp_server: AiohttpServer) -> None:
    async def invalid(request: web.Request) -> web.Response:
        return web.json_response({"kind": "Status", "message": 'Deployment "x" is invalid'}, status=422)

    async def not_json(request: web.Request) -> web.Response:
        return web.Response(text="<html>bad gateway</html>", status=502, reason="Bad Gateway")

    app = web.Application()
    app.router.add_patch("/apis/apps/v1/namespaces/ns/deployments/x", invalid)
    app.router.add_get("/version", not_json)
    server = await aiohttp_server(app)
    client = kube.Client(at(str(server.make_url(""))))
    manifest = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x", "namespace": "ns"}}
    try:
        with pytest.raises(kube.ApiError) as refused:
            await client.apply(manifest, None)
        with pytest.raises(kube.ApiError) as gateway_error:
            await client.server_minor()
    finally:
        await client.close()
    assert (refused.value.status, refused.value.message) == (422, 'Deployment "x" is invalid')
    assert (gateway_error.value.status, gateway_error.value.message) == (502, "Bad Gateway")


async def _closing_server(answer_on: set[int]) -> tuple[asyncio.Server, list[int]]:
    """Connection n (from 1) closes without an answer unless n is in ``answer_on``."""
    connections: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(len(connections) + 1)
        await reader.readuntil(b"\r\n\r\n")
        if connections[-1] in answer_on:
            body = json.dumps({"minor": "37"}).encode()
            head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            writer.write(head.encode() + body)
            await writer.drain()
        writer.close()

    return await asyncio.start_server(serve, "127.0.0.1", 0), connections


MANIFEST = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "ns"}}
# A GET (aiohttp sends it again itself) and a server-side apply (a PATCH: sent again here).
REQUESTS: dict[str, Callable[[kube.Client], Awaitable[object]]] = {
    "get": lambda client: client.server_minor(),
    "apply": lambda client: client.apply(MANIFEST, None),
}


@pytest.mark.parametrize("request_", REQUESTS)
async def test_a_request_on_a_connection_the_server_closed_is_sent_again_once(request_: str) -> None:
    # An API server restart closes the pooled connections; the next request on one must not fail.
    server, connections = await _closing_server(answer_on={2})
    port = server.sockets[0].getsockname()[1]
    client = kube.Client(at(f"http://127.0.0.1:{port}"))
    try:
        async with server:
            assert await REQUESTS[request_](client) in (37, True)
    finally:
        await client.close()
    assert connections == [1, 2]


@pytest.mark.parametrize("request_", REQUESTS)
async def test_a_server_that_keeps_closing_fails_the_request_after_one_resend(request_: str) -> None:
    server, connections = await _closing_server(answer_on=set())
    port = server.sockets[0].getsockname()[1]
    client = kube.Client(at(f"http://127.0.0.1:{port}"))
    try:
        async with server:
            with pytest.raises(aiohttp.ServerDisconnectedError):
                await REQUESTS[request_](client)
    finally:
        await client.close()
    assert connections == [1, 2]


def test_the_service_account_is_found_as_client_go_finds_it(tmp_path: pathlib.Path) -> None:
    (tmp_path / "token").write_text("tok\n")
    (tmp_path / "ca.crt").write_text("not read here")
    (tmp_path / "namespace").write_text("llmgw-system")
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    info = login.service_account(tmp_path, env)
    assert info is not None
    assert (info.server, info.token, info.ca_path, info.default_namespace) == (
        "https://[fd00::1]:443",
        "tok",
        str(tmp_path / "ca.crt"),
        "llmgw-system",
    )
    assert login.service_account(tmp_path, {}) is None  # not in a pod
    assert login.service_account(tmp_path / "absent", env) is None


def _kubeconfig(path: pathlib.Path, user: Mapping[str, object]) -> pathlib.Path:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "c",
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
        "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:6443"}}],
        "users": [{"name": "u", "user": user}],
    }
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def test_a_kubeconfig_token_is_used(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "config", {"token": "abc"})))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    info = login.connection()
    assert (info.server, info.token) == ("https://127.0.0.1:6443", "abc")


def test_an_exec_plugin_without_the_kubernetes_package_is_a_clear_login_error(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = {"exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "cloud-cli"}}
    monkeypatch.setenv("KUBECONFIG", str(_kubeconfig(tmp_path / "config", user)))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setitem(sys.modules, "kubernetes", None)  # not installed
    with pytest.raises(
        kopf.LoginError, match=r"exec plugin or auth provider.*install the `kubernetes` package"
    ):
        login.connection()


def test_the_operator_does_not_load_the_kubernetes_package() -> None:
    # kopf imports it whenever it is importable (3.3 MB resident more); nothing here uses it.
    code = "import sys, llmgw_operator.cli, llmgw_operator.handlers; print('kubernetes' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


async def test_each_request_is_one_debug_line_without_its_token(
    aiohttp_server: AiohttpServer, caplog: pytest.LogCaptureFixture
) -> None:
    # The cluster tests read these lines for the operator's writes (operatorkit.writes_since).
    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"items": [], "metadata": {}})

    app = web.Application()
    app.router.add_get("/api/v1/namespaces/ns/pods", answer)
    app.router.add_patch("/api/v1/namespaces/ns/configmaps/c", answer)
    server = await aiohttp_server(app)
    client = kube.Client(at(str(server.make_url("")), token="secret-token-value"))
    caplog.set_level(logging.DEBUG, logger="llmgw_operator.kube")
    try:
        await client.list_objects("Pod", "ns", "llmgateway.io/gateway")
        await client.apply(MANIFEST, None)
    finally:
        await client.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "llmgw_operator.kube"]
    assert lines == [
        '"GET /api/v1/namespaces/ns/pods?labelSelector=llmgateway.io/gateway" 200',
        '"PATCH /api/v1/namespaces/ns/configmaps/c?fieldManager=llmgw-operator&force=true" 200',
    ]
    assert "secret-token-value" not in caplog.text

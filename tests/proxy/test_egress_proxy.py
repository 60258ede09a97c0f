"""The sidecar behind a real forward proxy (tinyproxy) in front of a TLS provider signed by a test CA."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
import egresskit
import openai
import pydantic
import pytest
import yaml
from aiohttp.pytest_plugin import AiohttpServer

from llmgw_dev import fake_provider
from llmgw_proxy import config
from llmgw_proxy.runtime import reload

if TYPE_CHECKING:
    from conftest import MakeDoc, StartProxy

MESSAGES: list[Any] = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> egresskit.Pki:
    return egresskit.make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def tls_upstream(
    aiohttp_server: AiohttpServer, fake: fake_provider.FakeProvider, pki: egresskit.Pki
) -> int:
    """The fake provider over TLS with the test CA's certificate; returns its port."""
    server = await aiohttp_server(fake.app(), ssl=pki.server_context())
    assert server.port is not None
    return server.port


@pytest.fixture
async def tinyproxy(tmp_path: pathlib.Path) -> AsyncIterator[egresskit.Tinyproxy]:
    async with egresskit.tinyproxy(tmp_path) as proxy:
        yield proxy


def provider(doc: dict[str, Any], **egress: Any) -> dict[str, Any]:
    doc["providers"]["fake"]["egress"] = egress
    return doc


async def chat(url: str, model: str = "gpt-test") -> Any:
    """The official client, as an application calls the sidecar."""
    async with openai.AsyncOpenAI(base_url=url + "/v1", api_key="caller", max_retries=0) as client:
        return await client.chat.completions.create(model=model, messages=MESSAGES)


async def post_chat(url: str, model: str = "gpt-test") -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        resp = await http.post(url + "/v1/chat/completions", json={"model": model, "messages": MESSAGES})
        return resp.status, await resp.json()


async def test_https_goes_through_the_proxy_with_the_private_ca_and_the_key_stays_inside_tls(
    start_proxy: StartProxy,
    make_doc: MakeDoc,
    secret: str,
    tls_upstream: int,
    tinyproxy: egresskit.Tinyproxy,
    key_file: pathlib.Path,
    pki: egresskit.Pki,
    fake: fake_provider.FakeProvider,
) -> None:
    async with egresskit.tap(tinyproxy.port) as seen:  # every byte the proxy receives
        doc = provider(
            make_doc(f"https://localhost:{tls_upstream}/v1", key_file),
            proxy={"httpsProxy": seen.url},
            caFile=str(pki.ca),
        )
        sidecar = await start_proxy(doc)
        answer = await chat(sidecar.url)
        assert answer.choices[0].message.content
        assert fake.requests[-1].headers["Authorization"] == f"Bearer {secret}"
        assert tinyproxy.connects_to(f"localhost:{tls_upstream}") == 1
        # A second request reuses the tunnelled connection: no second CONNECT.
        status, body = await post_chat(sidecar.url)
        assert status == 200, body
        assert tinyproxy.connects_to(f"localhost:{tls_upstream}") == 1
    assert bytes(seen.sent).startswith(f"CONNECT localhost:{tls_upstream} HTTP/1.1\r\n".encode())
    assert secret.encode() not in seen.sent and b"chat/completions" not in seen.sent
    assert secret not in tinyproxy.log_text()


async def test_over_plain_http_the_proxy_would_see_the_key(
    start_proxy: StartProxy,
    make_doc: MakeDoc,
    secret: str,
    upstream: str,
    tinyproxy: egresskit.Tinyproxy,
    key_file: pathlib.Path,
) -> None:
    """The control for the test above: the tap does see a key that is not inside TLS."""
    async with egresskit.tap(tinyproxy.port) as seen:
        sidecar = await start_proxy(provider(make_doc(upstream, key_file), proxy={"httpProxy": seen.url}))
        status, body = await post_chat(sidecar.url)
        assert status == 200, body
    assert f"Authorization: Bearer {secret}".encode() in seen.sent


async def test_the_environment_sets_the_proxy_and_no_proxy_bypasses_it(
    start_proxy: StartProxy,
    make_doc: MakeDoc,
    secret: str,
    tls_upstream: int,
    tinyproxy: egresskit.Tinyproxy,
    key_file: pathlib.Path,
    pki: egresskit.Pki,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", tinyproxy.url)
    monkeypatch.setenv("NO_PROXY", "localhost")
    doc = make_doc(f"https://localhost:{tls_upstream}/v1", key_file)
    # Two providers: one reached by the name NO_PROXY lists, one by its address, which it does not.
    doc["providers"]["fake"]["egress"] = {"caFile": str(pki.ca)}
    doc["providers"]["by-address"] = {
        **doc["providers"]["fake"],
        "baseUrl": f"https://127.0.0.1:{tls_upstream}/v1",
    }
    doc["routes"] = [
        {"model": "direct", "targets": [{"provider": "fake"}]},
        {"model": "proxied", "targets": [{"provider": "by-address"}]},
    ]
    sidecar = await start_proxy(doc)
    status, body = await post_chat(sidecar.url, "direct")
    assert status == 200, body
    status, body = await post_chat(sidecar.url, "proxied")
    assert status == 200, body
    # The proxied request is in the log, so the direct one, sent before it, would be too.
    assert tinyproxy.connects_to(f"127.0.0.1:{tls_upstream}") == 1
    assert tinyproxy.connects_to(f"localhost:{tls_upstream}") == 0


async def test_a_policy_no_proxy_overrides_the_environment(
    start_proxy: StartProxy,
    make_doc: MakeDoc,
    secret: str,
    tls_upstream: int,
    tinyproxy: egresskit.Tinyproxy,
    key_file: pathlib.Path,
    pki: egresskit.Pki,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # nothing listens: the environment is not used
    doc = provider(
        make_doc(f"https://localhost:{tls_upstream}/v1", key_file),
        proxy={"httpsProxy": tinyproxy.url, "noProxy": "example.com, .localhost, 10.0.0.0/8"},
        caFile=str(pki.ca),
    )
    sidecar = await start_proxy(doc)
    status, body = await post_chat(sidecar.url)
    assert status == 200, body
    assert tinyproxy.connects_to(f"localhost:{tls_upstream}") == 0


async def test_a_wrong_ca_fails_with_a_clear_502(
    start_proxy: StartProxy,
    make_doc: MakeDoc,
    secret: str,
    tls_upstream: int,
    tinyproxy: egresskit.Tinyproxy,
    key_file: pathlib.Path,
    pki: egresskit.Pki,
    log_lines: Callable[[], list[str]],
) -> None:
    doc = provider(
        make_doc(f"https://localhost:{tls_upstream}/v1", key_file),
        proxy={"httpsProxy": tinyproxy.url},
        caFile=str(pki.other_ca),
    )
    sidecar = await start_proxy(doc)
    status, body = await post_chat(sidecar.url)
    assert status == 502
    error = body["error"]
    assert error["code"] == "upstream_tls_error"
    assert error["message"].startswith("TLS with provider 'fake' failed: certificate verification failed:")
    assert "unable to get local issuer certificate" in error["message"]
    assert secret not in str(body) and secret not in "\n".join(log_lines())
    assert any("certificate verification failed" in line for line in log_lines())
    assert secret not in tinyproxy.log_text()
    # The official client sees the same error as an APIError with the status.
    with pytest.raises(openai.InternalServerError, match="certificate verification failed"):
        await chat(sidecar.url)


async def test_a_missing_ca_bundle_is_named_in_the_502(
    start_proxy: StartProxy,
    make_doc: MakeDoc,
    secret: str,
    tls_upstream: int,
    key_file: pathlib.Path,
    tmp_path: pathlib.Path,
) -> None:
    missing = tmp_path / "no-such-ca.pem"
    doc = provider(make_doc(f"https://localhost:{tls_upstream}/v1", key_file), caFile=str(missing))
    sidecar = await start_proxy(doc)
    status, body = await post_chat(sidecar.url)
    assert status == 502
    assert body["error"]["code"] == "upstream_tls_error"
    assert f"the CA bundle {missing} cannot be loaded" in body["error"]["message"]


async def test_proxy_credentials_come_from_a_file_and_never_reach_a_log(
    start_proxy: StartProxy,
    make_doc: MakeDoc,
    secret: str,
    tls_upstream: int,
    key_file: pathlib.Path,
    pki: egresskit.Pki,
    tmp_path: pathlib.Path,
    log_lines: Callable[[], list[str]],
) -> None:
    password = "proxy-password-7f3a9c"
    credentials = tmp_path / "proxy-credentials"
    credentials.write_text(f"llmgw:{password}\n")
    proxy_dir = tmp_path / "proxy"
    proxy_dir.mkdir()
    async with egresskit.tinyproxy(proxy_dir, basic_auth=("llmgw", password)) as proxy:
        url = f"https://localhost:{tls_upstream}/v1"
        without = provider(make_doc(url, key_file), proxy={"httpsProxy": proxy.url}, caFile=str(pki.ca))
        sidecar = await start_proxy(without)
        status, body = await post_chat(sidecar.url)
        assert status == 502
        assert body["error"]["code"] == "egress_proxy_error"
        assert f"127.0.0.1:{proxy.port} requires proxy credentials (407)" in body["error"]["message"]

        with_file = provider(
            make_doc(url, key_file),
            proxy={"httpsProxy": proxy.url, "credentialsFile": str(credentials)},
            caFile=str(pki.ca),
        )
        sidecar = await start_proxy(with_file)
        status, body = await post_chat(sidecar.url)
        assert status == 200, body

        # Credentials in the URL's userinfo work too, and the URL is never quoted.
        in_url = provider(
            make_doc(url, key_file),
            proxy={"httpsProxy": f"http://llmgw:{password}@127.0.0.1:{proxy.port}"},
            caFile=str(pki.ca),
        )
        sidecar = await start_proxy(in_url)
        status, body = await post_chat(sidecar.url)
        assert status == 200, body
        assert password not in proxy.log_text()
    assert all(password not in line and secret not in line for line in log_lines())


async def test_plain_http_goes_to_the_http_proxy_in_absolute_form(
    start_proxy: StartProxy,
    make_doc: MakeDoc,
    secret: str,
    upstream: str,
    tinyproxy: egresskit.Tinyproxy,
    key_file: pathlib.Path,
    fake: fake_provider.FakeProvider,
) -> None:
    doc = provider(make_doc(upstream, key_file), proxy={"httpProxy": tinyproxy.url})
    sidecar = await start_proxy(doc)
    status, body = await post_chat(sidecar.url)
    assert status == 200, body
    assert f"POST {upstream}/chat/completions " in tinyproxy.log_text()
    assert fake.requests[-1].headers["Authorization"] == f"Bearer {secret}"
    assert "Proxy-Authorization" not in fake.requests[-1].headers


async def test_mtls_presents_the_client_certificate(
    start_proxy: StartProxy,
    make_doc: MakeDoc,
    secret: str,
    aiohttp_server: AiohttpServer,
    fake: fake_provider.FakeProvider,
    key_file: pathlib.Path,
    pki: egresskit.Pki,
) -> None:
    server = await aiohttp_server(fake.app(), ssl=pki.server_context(require_client_cert=True))
    url = f"https://localhost:{server.port}/v1"
    with_cert = provider(
        make_doc(url, key_file),
        caFile=str(pki.ca),
        clientCertFile=str(pki.client_cert),
        clientKeyFile=str(pki.client_key),
    )
    sidecar = await start_proxy(with_cert)
    status, body = await post_chat(sidecar.url)
    assert status == 200, body

    without = provider(make_doc(url, key_file), caFile=str(pki.ca))
    sidecar = await start_proxy(without)
    status, body = await post_chat(sidecar.url)
    assert status == 502
    assert body["error"]["code"] in ("upstream_tls_error", "upstream_connection_error")


def test_a_bad_proxy_url_is_refused_by_the_config_without_quoting_it(
    make_doc: MakeDoc, tmp_path: pathlib.Path
) -> None:
    doc = provider(make_doc("https://api.example/v1", None), proxy={"httpsProxy": "socks5://u:pw-123@p:1"})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(reload.ConfigError) as caught:
        reload.read_config(str(path))
    assert "providers.fake.egress.proxy.httpsProxy: proxy URL scheme 'socks5' is not supported" in str(
        caught.value
    )
    assert "pw-123" not in str(caught.value)
    doc = provider(make_doc("https://api.example/v1", None), clientKeyFile="/k.pem")
    with pytest.raises(pydantic.ValidationError, match=r"clientKeyFile needs egress\.clientCertFile"):
        config.parse(doc)


async def test_a_rotated_ca_bundle_applies_from_the_next_connection(
    start_proxy: StartProxy,
    make_doc: MakeDoc,
    tls_upstream: int,
    key_file: pathlib.Path,
    pki: egresskit.Pki,
    tmp_path: pathlib.Path,
) -> None:
    bundle = tmp_path / "ca-bundle.pem"
    bundle.write_bytes(pki.other_ca.read_bytes())
    doc = provider(make_doc(f"https://localhost:{tls_upstream}/v1", key_file), caFile=str(bundle))
    sidecar = await start_proxy(doc)
    status, body = await post_chat(sidecar.url)
    assert (status, body["error"]["code"]) == (502, "upstream_tls_error")
    # What kubelet does when the ConfigMap or Secret changes: new content, a new file.
    replacement = tmp_path / "ca-bundle.pem.new"
    replacement.write_bytes(pki.ca.read_bytes())
    replacement.replace(bundle)
    status, body = await post_chat(sidecar.url)
    assert status == 200, body

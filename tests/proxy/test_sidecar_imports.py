"""What a real ``llmgw-proxy`` process imports: the heavy optional machinery only when configured.

The sidecar runs as the CLI runs it (``cli.main``) in a ``python -c`` wrapper
that prints ``sorted(sys.modules)`` at exit; it serves a request, is sent
SIGTERM, drains and exits 0, and the test reads what it had loaded. With
tracing off and no ``sharedStore``, none of ``HEAVY`` may be there (each is
megabytes of RSS and tens of milliseconds of start, docs/reliability.md);
with them configured, they are.

The interpreter runs with the image's ``PYTHONOPTIMIZE`` (Dockerfile.proxy;
the operator-rendered container runs the image's program with the image's
environment): the sidecar serves with its docstrings and asserts stripped.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import signal
import sys
from typing import TYPE_CHECKING

import openai
import pytest
import yaml

from llmgw_dev import dockerfile_check

if TYPE_CHECKING:
    from conftest import MakeDoc
    from rediskit import RedisServer

DOCKERFILE = pathlib.Path(__file__).resolve().parents[2] / "Dockerfile.proxy"
TRACING = ("opentelemetry", "opentelemetry.sdk", "opentelemetry.exporter")  # the API too
SHARED = ("redis",)
NEVER = ("openai", "anthropic", "kopf", "llmgw_operator", "llmgw_dev")
# aiohttp's client: its connector loads the system CA store twice at import (server/lazy_aiohttp.py).
CLIENT = ("aiohttp.client", "aiohttp.connector", "aiohttp.client_reqrep")
# frozenlist's C++ extension maps libstdc++ (cli.py runs its pure-Python twin).
NATIVE = ("frozenlist._frozenlist",)
# The sidecar writes its /metrics itself (telemetry/exposition.py): prometheus_client's __init__
# imports its HTTP servers, push client and default collectors.
METRICS_LIBRARY = ("prometheus_client",)
# Neither the version (read on --version) nor pydantic's plugin loader (server/pydantic_plugins.py).
METADATA = ("importlib.metadata",)
# PyYAML's writers and libyaml binding: the sidecar reads its config with the safe loader alone.
YAML_WRITERS = ("yaml.emitter", "yaml.serializer", "yaml.representer", "yaml.dumper", "yaml.cyaml")
HEAVY = TRACING + SHARED + NEVER + CLIENT + NATIVE + METRICS_LIBRARY + METADATA + YAML_WRITERS

WRAPPER = (
    "import atexit, json, sys\n"
    "atexit.register(lambda: print(json.dumps([sys.flags.optimize, sorted(sys.modules)]), flush=True))\n"
    "from llmgw_proxy import cli\n"
    "sys.exit(cli.main(sys.argv[1:]))\n"
)


def _loaded(modules: list[str], prefixes: tuple[str, ...]) -> set[str]:
    return {p for p in prefixes if any(m == p or m.startswith(p + ".") for m in modules)}


async def _modules_of_a_sidecar(config: pathlib.Path, env: dict[str, str]) -> list[str]:
    """The modules of a real sidecar, run with the image's interpreter settings."""
    image_env = dockerfile_check.final_env(DOCKERFILE.read_text())
    env = {**env, "PYTHONOPTIMIZE": image_env.get("PYTHONOPTIMIZE", "")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", WRAPPER, "--config", str(config),
        "--port", "0", "--admin-port", "0", "--admin-host", "127.0.0.1",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    assert proc.stderr is not None and proc.stdout is not None
    try:
        api = None
        async for raw in proc.stderr:
            line = json.loads(raw) if raw.startswith(b"{") else {}
            if "api" in line:
                api = line["api"]
                break
        assert api is not None, "the sidecar never logged its listeners"
        async with openai.AsyncOpenAI(base_url=f"http://{api}/v1", api_key="c", max_retries=0) as client:
            await client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
            stream = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            assert [chunk async for chunk in stream]
        proc.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0
    optimize, modules = json.loads(out.decode().strip().splitlines()[-1])
    assert isinstance(modules, list)
    assert optimize == 2  # as the image runs it: no docstrings, no asserts
    assert "llmgw_proxy.server.run" in modules  # the wrapper saw the real server
    return modules


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return {**env, **extra}


async def test_a_plain_sidecar_loads_no_tracing_sdk_no_redis_no_sdks_and_no_http_client(
    make_doc: MakeDoc, upstream: str, key_file: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(make_doc(upstream, key_file)))
    modules = await _modules_of_a_sidecar(config, _env())
    assert _loaded(modules, HEAVY) == set()


async def test_tracing_and_a_shared_store_load_their_machinery(
    make_doc: MakeDoc,
    upstream: str,
    key_file: pathlib.Path,
    tmp_path: pathlib.Path,
    redis_server: RedisServer,
) -> None:
    doc = make_doc(upstream, key_file)
    doc["providers"]["fake"].update(sharedId="team-a/openai", rateLimit={"requestsPerMinute": 600})
    doc["sharedStore"] = {"url": redis_server.url, "timeout": 2}
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(doc))
    # Nothing listens there: the exporter's failures are its own, the sidecar serves on.
    env = _env(OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9", OTEL_BSP_EXPORT_TIMEOUT="500")
    modules = await _modules_of_a_sidecar(config, env)
    # OpenTelemetry finds its context, propagators and exporters through entry points.
    assert _loaded(modules, HEAVY) == set(TRACING + SHARED + METADATA)


@pytest.mark.parametrize("prefix", HEAVY)
def test_heavy_names_are_real_modules(prefix: str) -> None:
    """A renamed package would make the absence above vacuous: each name must import here."""
    __import__(prefix)

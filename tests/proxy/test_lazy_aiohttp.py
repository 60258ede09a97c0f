"""The sidecar's aiohttp package module: the web side without the client, the client on demand.

Each case runs in a fresh interpreter (``install`` acts only before aiohttp is
imported, and this test process has imported it long ago).
"""

from __future__ import annotations

import json
import subprocess
import sys

import aiohttp

LAZY_THEN_WEB = (
    "import json, sys\n"
    "from llmgw_proxy.server import lazy_aiohttp\n"
    "installed = lazy_aiohttp.install()\n"
    "from aiohttp import web\n"
    "import aiohttp.web_protocol\n"
    "client = sorted(m for m in sys.modules if m in ('aiohttp.client', 'aiohttp.connector'))\n"
)


def _run(code: str) -> dict[str, object]:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_the_web_side_imports_without_the_client() -> None:
    out = _run(
        LAZY_THEN_WEB
        + "print(json.dumps({'installed': installed, 'client': client, 'app': web.Application.__module__,"
        " 'version': sys.modules['aiohttp'].__version__}))\n"
    )
    assert out == {
        "installed": True,
        "client": [],
        "app": "aiohttp.web_app",
        "version": aiohttp.__version__,  # the Server header aiohttp.http builds from it
    }


def test_a_name_of_aiohttps_init_loads_the_real_package() -> None:
    out = _run(
        LAZY_THEN_WEB + "import aiohttp\n"
        "from aiohttp import TCPConnector\n"
        "print(json.dumps({'client': client, 'session': aiohttp.ClientSession.__module__,"
        " 'connector': TCPConnector.__module__, 'plain': type(aiohttp).__name__,"
        " 'all': sorted(aiohttp.__all__), 'web': aiohttp.web is web}))\n"
    )
    assert out == {
        "client": [],  # before the first name was asked for
        "session": "aiohttp.client",
        "connector": "aiohttp.connector",
        "plain": "module",
        "all": sorted(aiohttp.__all__),
        "web": True,
    }


def test_an_unknown_name_is_an_attribute_error() -> None:
    out = _run(
        LAZY_THEN_WEB + "import aiohttp\n"
        "has = hasattr(aiohttp, 'no_such_name')\n"
        "print(json.dumps({'has': has, 'session': hasattr(aiohttp, 'ClientSession')}))\n"
    )
    assert out == {"has": False, "session": True}


def test_install_does_nothing_once_aiohttp_is_imported() -> None:
    from llmgw_proxy.server import lazy_aiohttp

    assert lazy_aiohttp.install() is False
    assert sys.modules["aiohttp"] is aiohttp

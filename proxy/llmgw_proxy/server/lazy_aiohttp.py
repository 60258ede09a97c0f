"""aiohttp's server without its client, in the sidecar process.

The sidecar serves with ``aiohttp.web`` and dials providers with its own
client (``upstream/``). ``aiohttp/__init__`` imports the whole client all the
same, and ``aiohttp.connector`` builds two TLS contexts at import, loading the
system CA store twice: about 4 MB of the idle sidecar's RSS and 0.15 s of CPU
at start (docs/reliability.md). ``install`` puts an aiohttp package module in
``sys.modules`` that has the real one's path, spec and version and runs the
real ``__init__`` only when a name it defines is first asked for
(``aiohttp.ClientSession``, ``from aiohttp import TCPConnector``); submodules
(``aiohttp.web``) import as they always do (``lazy_packages``). aiohttp's files
are not changed: a process that uses the client gets the same aiohttp, only later.
"""

from __future__ import annotations

import re

from llmgw_proxy.server import lazy_packages

PACKAGE = "aiohttp"


def _version(init: str | None) -> str:
    """The ``__version__`` the real ``__init__`` sets (its first line), read from its source; the
    distribution's metadata if that line moves. Not importlib.metadata first: with its email,
    zipfile and csv imports it is about 0.6 MB of the idle sidecar's RSS."""
    try:
        with open(init or "", encoding="utf-8") as f:
            found = re.search(r'^__version__ = "([^"]+)"$', f.read(), re.MULTILINE)
    except OSError:
        found = None
    if found is not None:
        return found.group(1)
    from importlib import metadata

    return metadata.version(PACKAGE)


def install() -> bool:
    """Put the lazy package in place; False (and nothing done) once aiohttp is imported or not
    installed as a plain package."""
    module = lazy_packages.install(PACKAGE)
    if module is None:
        return False
    # aiohttp.http reads it for its Server header, at its import: before any submodule's.
    module.__version__ = _version(module.__file__)  # type: ignore[attr-defined]
    return True

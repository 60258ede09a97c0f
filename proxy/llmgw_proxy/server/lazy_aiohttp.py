"""aiohttp's server without its client, in the sidecar process.

The sidecar serves with ``aiohttp.web`` and dials providers with its own
client (``upstream/``). ``aiohttp/__init__`` imports the whole client all the
same, and ``aiohttp.connector`` builds two TLS contexts at import, loading the
system CA store twice: about 4 MB of the idle sidecar's RSS and 0.15 s of CPU
at start (docs/reliability.md). ``install`` puts an aiohttp package module in
``sys.modules`` that has the real one's path, spec and version and runs the
real ``__init__`` only when a name it defines is first asked for
(``aiohttp.ClientSession``, ``from aiohttp import TCPConnector``); submodules
(``aiohttp.web``) import as they always do. aiohttp's files are not changed: a
process that uses the client gets the same aiohttp, only later.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import types

PACKAGE = "aiohttp"


class _Package(types.ModuleType):
    def __getattr__(self, name: str) -> object:
        """Called only for names not set yet: a submodule, or one of ``__init__``'s names."""
        if not name.startswith("__") and importlib.util.find_spec(f"{PACKAGE}.{name}") is not None:
            return importlib.import_module(f"{PACKAGE}.{name}")
        # From now on a plain module, as an ordinary import leaves it; then the real
        # __init__ runs in it (its relative imports find this module in sys.modules).
        self.__class__ = types.ModuleType  # type: ignore[assignment]
        spec = self.__spec__
        assert spec is not None and spec.loader is not None  # install() checked both
        spec.loader.exec_module(self)
        try:
            return self.__dict__[name]
        except KeyError:
            raise AttributeError(f"module {PACKAGE!r} has no attribute {name!r}") from None


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
    if PACKAGE in sys.modules:
        return False
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return False
    module = _Package(PACKAGE)
    module.__spec__ = spec
    module.__loader__ = spec.loader
    module.__file__ = spec.origin
    module.__path__ = list(spec.submodule_search_locations)
    module.__package__ = PACKAGE
    # aiohttp.http reads it for its Server header.
    module.__version__ = _version(spec.origin)  # type: ignore[attr-defined]
    sys.modules[PACKAGE] = module
    return True

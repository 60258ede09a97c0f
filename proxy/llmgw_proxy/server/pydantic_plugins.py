"""pydantic's plugins off in the sidecar, without the importlib.metadata their loader imports.

pydantic looks for plugins (the ``pydantic`` entry points of every installed
distribution) when it builds its first model, in ``pydantic.plugin._loader``,
which imports importlib.metadata at its top: with that package's email,
zipfile and csv imports, about 0.6 MB of the idle sidecar's RSS
(docs/reliability.md). The sidecar runs no plugin: its image installs none,
and one would be foreign code run on every config it parses. ``install`` sets
pydantic's documented switch ``PYDANTIC_DISABLE_PLUGINS=__all__`` unless the
environment already sets it; when the switch turns all plugins off, it puts a
module in place of pydantic's loader whose ``get_plugins`` answers what the
real one then answers: no plugins. A sidecar run with another value
(``PYDANTIC_DISABLE_PLUGINS=`` to let plugins load) gets pydantic's own loader.
"""

from __future__ import annotations

import os
import sys
import types

SWITCH = "PYDANTIC_DISABLE_PLUGINS"
ALL_OFF = ("__all__", "1", "true")  # the values pydantic's loader reads as "no plugins at all"
LOADER = "pydantic.plugin._loader"


def _no_plugins() -> tuple[()]:
    return ()


def install() -> bool:
    """Before pydantic builds a model; False (and pydantic's loader kept) when plugins may load
    or the loader is imported already."""
    os.environ.setdefault(SWITCH, "__all__")
    if os.environ[SWITCH] not in ALL_OFF or LOADER in sys.modules:
        return False
    loader = types.ModuleType(LOADER)
    loader.get_plugins = _no_plugins  # type: ignore[attr-defined]
    sys.modules[LOADER] = loader
    return True

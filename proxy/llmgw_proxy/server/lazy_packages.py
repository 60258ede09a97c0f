"""A package's submodules without its ``__init__``, in the sidecar process.

Some packages' ``__init__`` imports far more than the sidecar uses from them:
aiohttp's imports its HTTP client (``lazy_aiohttp``), PyYAML's its emitter,
serializer, representer and dumpers and its libyaml binding, where the
sidecar only reads its config with the pure-Python safe loader. ``install``
puts a package module in ``sys.modules`` that has the real one's path and
spec and runs the real ``__init__`` only when a name it defines is first
asked for (``yaml.safe_dump``, ``aiohttp.ClientSession``); submodules
(``yaml.loader``, ``aiohttp.web``) import as they always do. The packages'
files are not changed: a process that uses the rest gets the same package,
only later.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types


class _Package(types.ModuleType):
    def __getattr__(self, name: str) -> object:
        """Called only for names not set yet: a submodule, or one of ``__init__``'s names."""
        package = self.__name__
        if not name.startswith("__") and importlib.util.find_spec(f"{package}.{name}") is not None:
            return importlib.import_module(f"{package}.{name}")
        # From now on a plain module, as an ordinary import leaves it; then the real
        # __init__ runs in it (its relative imports find this module in sys.modules).
        self.__class__ = types.ModuleType  # type: ignore[assignment]
        spec = self.__spec__
        assert spec is not None and spec.loader is not None  # install() checked both
        spec.loader.exec_module(self)
        try:
            return self.__dict__[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None


def install(package: str) -> types.ModuleType | None:
    """Put the lazy package in place and return it; None (and nothing done) once the package is
    imported or when it is not installed as a plain package."""
    if package in sys.modules:
        return None
    spec = importlib.util.find_spec(package)
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        return None
    module = _Package(package)
    module.__spec__ = spec
    module.__loader__ = spec.loader
    module.__file__ = spec.origin
    module.__path__ = list(spec.submodule_search_locations)
    module.__package__ = package
    sys.modules[package] = module
    return module

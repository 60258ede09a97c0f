"""Which build of the sidecar an interpreter imports: pure, or the policy cores compiled.

One source tree ships two ways (see setup.py): pure Python, or with
``llmgw_proxy.policies`` compiled by mypyc into extension modules that sit next
to the .py files and win the import. Which one a process runs depends on its
interpreter and path, so the answer has to come from that process:
``python -m llmgw_dev.builds`` (or this file run as a script, where llmgw_dev is
not installed) prints ``{"build": ..., "modules": {name: file}}`` as JSON.

Only the standard library is imported here, so the script runs in an image's venv.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import json
import pkgutil
import sys

PACKAGE = "llmgw_proxy.policies"


def policy_modules() -> dict[str, str]:
    """The policies package and each of its modules, imported, with the file each came from."""
    package = importlib.import_module(PACKAGE)
    names = [PACKAGE, *(f"{PACKAGE}.{m.name}" for m in pkgutil.iter_modules(package.__path__))]
    return {name: importlib.import_module(name).__file__ or "" for name in names}


def is_compiled(path: str) -> bool:
    return path.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


def build(files: dict[str, str]) -> str:
    """``compiled`` when every module is an extension, ``pure`` when none is, else ``mixed``."""
    compiled = [is_compiled(path) for path in files.values()]
    if compiled and all(compiled):
        return "compiled"
    return "mixed" if any(compiled) else "pure"


def pure_modules(files: dict[str, str]) -> list[str]:
    return sorted(name for name, path in files.items() if not is_compiled(path))


def main() -> int:
    files = policy_modules()
    print(json.dumps({"build": build(files), "modules": files}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Build hook for the one compiled variant; pyproject.toml holds all the metadata.

``pip wheel .`` builds the pure wheel. ``LLMGW_MYPYC=1 pip wheel .`` builds the
same sources with ``llmgw_proxy/policies/*.py`` also compiled by mypyc into
extension modules; the .py files stay in the wheel, and the import system
prefers the .so next to them. Only the policy cores are compiled: they are
strict-typed pure CPU work, while compiling the async request path made it
slower.

The compiled build asks for its own build requirements (mypy and the packages
whose types the policies use), so it works in pip's usual isolated build env:
setuptools calls this file once for ``egg_info`` to learn the requirements
(``setup_requires`` is how its backend reports them), then again to build.
"""

from __future__ import annotations

import os
import pathlib
import sys

import setuptools

ROOT = pathlib.Path(__file__).parent
COMPILED_PACKAGE = pathlib.Path("proxy", "llmgw_proxy", "policies")
# Pinned so a compiled image is reproducible; the types the policies see decide
# the generated code, so every third-party package they import is here too.
COMPILED_BUILD_REQUIRES = ["mypy==2.4.1", "pydantic>=2.8,<3", "orjson>=3.10"]
# The mypy options come from pyproject's [tool.mypy] (strict, the pydantic
# plugin, the source roots). Modules outside the compiled package are read for
# their types but not reported on: `make lint` checks them, and a build must
# not fail on a stub missing from the build env.
MYPY_ARGS = [
    *("--config-file", "pyproject.toml"),
    *("--follow-imports", "silent"),
    *("--cache-dir", "build/mypyc-cache"),  # not .mypy_cache: `make lint` keeps its own there
]
# Commands that build extensions; the others only write metadata or sources.
BUILD_COMMANDS = {"bdist_wheel", "build", "build_ext", "install"}
EDITABLE_COMMANDS = {"editable_wheel", "develop"}


def compiled_extensions() -> list[setuptools.Extension]:
    try:
        from mypyc.build import mypycify
    except ImportError:
        sys.exit(f"LLMGW_MYPYC=1 needs {' '.join(COMPILED_BUILD_REQUIRES)} in the build env")

    sources = sorted(str(p) for p in COMPILED_PACKAGE.glob("*.py"))
    # One named group: the shared library is `llmgw_policies__mypyc.*.so`, not a hash.
    return mypycify([*MYPY_ARGS, *sources], opt_level="3", group_name="llmgw_policies")


def main() -> None:
    os.chdir(ROOT)  # the mypy config and the source paths are relative to the checkout
    commands = set(sys.argv[1:])
    if os.environ.get("LLMGW_MYPYC") != "1":
        setuptools.setup()
    elif commands & EDITABLE_COMMANDS:
        # In-place .so files would shadow every later edit of the .py files.
        sys.exit("LLMGW_MYPYC=1 is for wheels only; an editable install stays pure")
    elif commands & BUILD_COMMANDS:
        setuptools.setup(ext_modules=compiled_extensions())
    elif "egg_info" in commands:
        setuptools.setup(setup_requires=COMPILED_BUILD_REQUIRES)
    else:
        setuptools.setup()


main()

"""PyYAML's loader without its package ``__init__`` (server/lazy_packages.py), as the sidecar reads
its config; aiohttp's case is test_lazy_aiohttp.py.

The fresh-interpreter cases run in a subprocess: ``install`` acts only before
the package is imported, and this test process imported PyYAML long ago.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from llmgw_proxy.runtime import reload

WRITERS = ["yaml.cyaml", "yaml.dumper", "yaml.emitter", "yaml.representer", "yaml.serializer"]
LAZY_THEN_READ = (
    "import io, json, sys\n"
    "from llmgw_proxy.server import lazy_packages\n"
    "installed = lazy_packages.install('yaml') is not None\n"
    "from llmgw_proxy.runtime import reload\n"
    "data = reload._safe_load(io.StringIO('a: [1, 2.5, null, true]\\nb: {c: \"d\"}\\n'))\n"
    f"writers = sorted(m for m in sys.modules if m in {WRITERS!r})\n"
)


def _run(code: str) -> dict[str, object]:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_the_config_reads_with_the_loader_alone() -> None:
    out = _run(
        LAZY_THEN_READ + "print(json.dumps({'installed': installed, 'data': data, 'writers': writers}))\n"
    )
    assert out == {
        "installed": True,
        "data": {"a": [1, 2.5, None, True], "b": {"c": "d"}},
        "writers": [],
    }


def test_a_name_of_the_packages_init_loads_the_real_package() -> None:
    out = _run(
        LAZY_THEN_READ + "import yaml\n"
        "dumped = yaml.safe_dump({'k': [1]})\n"
        "print(json.dumps({'before': writers, 'dumped': dumped, 'plain': type(yaml).__name__,"
        " 'same_error': yaml.YAMLError is reload.YAMLError, 'missing': hasattr(yaml, 'no_such_name')}))\n"
    )
    assert out == {
        "before": [],
        "dumped": "k:\n- 1\n",
        "plain": "module",
        "same_error": True,
        "missing": False,
    }


def test_install_does_nothing_once_the_package_is_imported() -> None:
    from llmgw_proxy.server import lazy_packages

    assert lazy_packages.install("yaml") is None
    assert sys.modules["yaml"] is yaml
    assert lazy_packages.install("no_such_package_here") is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@given(json_values, st.booleans())
def test_the_loader_reads_what_safe_load_reads(value: object, as_json: bool) -> None:
    text = json.dumps(value) if as_json else yaml.safe_dump(value)
    assert reload._safe_load(io.StringIO(text)) == yaml.safe_load(text)


@pytest.mark.parametrize("text", ["a: [1, 2", "a: b: c", "- x\ny: 1", "{'a': 1", "\t- tab"])
def test_the_loader_refuses_what_safe_load_refuses(text: str) -> None:
    with pytest.raises(yaml.YAMLError) as expected:
        yaml.safe_load(io.StringIO(text))
    with pytest.raises(yaml.YAMLError) as got:  # the class reload catches (yaml.error's)
        reload._safe_load(io.StringIO(text))
    assert str(got.value) == str(expected.value)

"""``parse.depth`` reads a JSON document's nesting from its bytes alone: it must agree with
the decoded document, whatever its strings hold (brackets, quotes, escapes)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from llmgw_proxy.steps import parse

TEXT = st.text(alphabet=st.sampled_from('[]{}"\\/,:ab\u00e9\u202e\n\t\x00\U0001f600'), max_size=12)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT
DOCUMENTS = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=40,
)


def reference(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(reference, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(reference, value.values()), default=0)
    return 0


@given(DOCUMENTS, st.booleans(), st.sampled_from([None, 1]))
def test_agrees_with_the_decoded_document(document: Any, ascii_only: bool, indent: int | None) -> None:
    raw = json.dumps(document, ensure_ascii=ascii_only, indent=indent).encode()
    assert parse.depth(raw) == reference(document)


def test_counts_deep_nesting_without_recursion() -> None:
    assert parse.depth(b"[" * 1_000_000 + b"]" * 1_000_000) == 1_000_000
    assert parse.depth(b'{"a": "[[[[", "b": ["\\"]]]"]}') == 2

"""The reference maps the handlers keep from watch events, against a recount from scratch."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmgw_operator import references

NAMESPACES = st.sampled_from(["a", "b", None])
NAMES = st.sampled_from(["x", "y", "z"])
# Each step: (namespace, referrer, names it now references) or (namespace, referrer, None) for a delete.
STEPS = st.lists(st.tuples(NAMESPACES, NAMES, st.none() | st.frozensets(NAMES, max_size=3)), max_size=40)


@given(STEPS)
def test_referrers_always_match_the_latest_spec_of_every_object(steps: list[Any]) -> None:
    refs = references.References()
    latest: dict[tuple[str | None, str], frozenset[str]] = {}
    for namespace, name, names in steps:
        if names is None:
            refs.drop(namespace, name)
            latest.pop((namespace, name), None)
        else:
            refs.set(namespace, name, names)
            latest[(namespace, name)] = names
    for namespace in ("a", "b", None):
        for named in ("x", "y", "z"):
            expected = sorted(r for (ns, r), names in latest.items() if ns == namespace and named in names)
            assert refs.referrers(namespace, named) == expected
            assert ((namespace, named) in refs) == bool(expected)


def test_a_namespace_never_sees_another_namespaces_references() -> None:
    refs = references.References()
    refs.set("team-a", "chat", ["primary"])
    assert refs.referrers("team-b", "primary") == []
    assert refs.referrers("team-a", "primary") == ["chat"]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param(
            {"routes": [{"targets": [{"policy": "p1"}, {"policy": "p2"}]}, {"targets": [{"policy": "p1"}]}]},
            {"p1", "p2"},
            id="every-target",
        ),
        pytest.param({}, set(), id="no-routes"),
        pytest.param({"routes": "oops"}, set(), id="routes-not-a-list"),
        pytest.param({"routes": [None, {"targets": [7, {"policy": 3}, {}]}]}, set(), id="junk-entries"),
    ],
)
def test_policies_of_reads_any_spec_without_failing(spec: dict[str, Any], expected: set[str]) -> None:
    assert references.policies_of(spec) == expected


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param({"apiKeySecretRef": {"name": "key", "key": "k"}}, {"key"}, id="named"),
        pytest.param({"apiKeySecretRef": "key"}, set(), id="not-an-object"),
        pytest.param({}, set(), id="absent"),
    ],
)
def test_secret_of_reads_any_spec_without_failing(spec: dict[str, Any], expected: set[str]) -> None:
    assert references.secret_of(spec) == expected

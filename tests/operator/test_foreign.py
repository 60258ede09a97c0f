"""The child names others hold (``foreign.ForeignNames``), against a recount of the events."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmgw_operator import foreign

KINDS = st.sampled_from(["ConfigMap", "Secret", "Deployment"])
NAMES = st.tuples(
    st.sampled_from(["a", "b"]), st.sampled_from(["web", "web-proxy-config", "web-provider-keys", "db"])
)
# Each step: ("listed", kind, names) | ("added"/"removed", kind, name) | ("lost", kind, None)
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("listed"), KINDS, st.frozensets(NAMES, max_size=4)),
        st.tuples(st.sampled_from(["added", "removed"]), KINDS, NAMES),
        st.tuples(st.just("lost"), KINDS, st.none()),
    ),
    max_size=40,
)


@given(STEPS)
def test_answers_as_a_recount_of_the_listings_and_events_since(steps: list[Any]) -> None:
    held = foreign.ForeignNames()
    known: dict[str, set[tuple[str, str]]] = {}  # kinds listed and not lost since: all their names
    for step, kind, arg in steps:
        getattr(held, step)(kind, *([arg] if arg is not None else []))
        if step == "listed":
            known[kind] = set(arg)
        elif step == "lost":
            known.pop(kind, None)
        elif kind in known:
            (known[kind].add if step == "added" else known[kind].discard)(arg)
    for kind in ("ConfigMap", "Secret", "Deployment"):
        for namespace in ("a", "b"):
            for name in ("web", "web-proxy-config", "web-provider-keys", "db"):
                answer = held.holds(kind, namespace, name)
                if kind not in known or not foreign.relevant(kind, name):
                    assert answer is None, (kind, namespace, name)
                else:
                    assert answer is ((namespace, name) in known[kind]), (kind, namespace, name)


@pytest.mark.parametrize(
    ("kind", "name", "kept"),
    [
        ("ConfigMap", "web-proxy-config", True),
        ("ConfigMap", "kube-root-ca.crt", False),
        ("Secret", "web-provider-keys", True),
        ("Secret", "sh.helm.release.v1.web.v1", False),
        ("Deployment", "anything", True),
        ("HorizontalPodAutoscaler", "anything", True),
    ],
)
def test_keeps_only_names_a_child_of_that_kind_could_have(kind: str, name: str, kept: bool) -> None:
    held = foreign.ForeignNames()
    held.listed(kind, [("ns", name)])
    assert len(held) == (1 if kept else 0)


def test_a_kind_past_the_bound_stops_answering_until_listed_under_it_again() -> None:
    held = foreign.ForeignNames(max_names=2)
    held.listed("Deployment", [("ns", "a"), ("ns", "b")])
    assert held.holds("Deployment", "ns", "c") is False

    held.added("Deployment", ("ns", "c"))
    assert held.holds("Deployment", "ns", "c") is None
    assert held.holds("Deployment", "ns", "a") is None
    assert len(held) == 0  # nothing kept for a kind that cannot answer

    held.listed("Deployment", [("ns", "a"), ("ns", "b"), ("ns", "c")])
    assert held.holds("Deployment", "ns", "a") is None
    held.listed("Deployment", [("ns", "a")])
    assert held.holds("Deployment", "ns", "a") is True

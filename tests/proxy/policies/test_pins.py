"""The map of stored responses to the provider that created them: bounded, most recent kept."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from llmgw_proxy.policies import pins

IDS = st.text(alphabet="abcdef0123456789", min_size=1, max_size=6)


def test_an_id_is_owned_by_the_provider_that_created_it_until_forgotten() -> None:
    owners = pins.Pins(10)
    owners.remember("resp_1", "primary")
    owners.remember("resp_2", "fallback")
    assert owners.owner("resp_1") == "primary"
    assert owners.owner("resp_2") == "fallback"
    owners.forget("resp_1")
    assert owners.owner("resp_1") is None


def test_the_oldest_unused_id_goes_first_and_a_read_counts_as_use() -> None:
    owners = pins.Pins(2)
    owners.remember("a", "p")
    owners.remember("b", "p")
    assert owners.owner("a") == "p"  # a conversation in use
    owners.remember("c", "p")
    assert (owners.owner("a"), owners.owner("b"), owners.owner("c")) == ("p", None, "p")


def test_ids_too_long_or_a_zero_bound_are_not_remembered() -> None:
    owners = pins.Pins(0)
    owners.remember("a", "p")
    assert len(owners) == 0
    owners.resize(5)
    owners.remember("x" * (pins.MAX_ID + 1), "p")
    assert len(owners) == 0


@given(st.integers(0, 20), st.lists(st.tuples(IDS, st.sampled_from(["p", "q"])), max_size=60))
def test_never_holds_more_than_its_bound_and_always_the_latest_owner_of_the_newest_id(
    bound: int, created: list[tuple[str, str]]
) -> None:
    owners = pins.Pins(bound)
    for rid, provider in created:
        owners.remember(rid, provider)
        assert len(owners) <= bound
        if bound:
            assert owners.owner(rid) == provider


@given(st.lists(IDS, max_size=40), st.integers(0, 10))
def test_shrinking_keeps_the_most_recent(created: list[str], smaller: int) -> None:
    owners = pins.Pins(40)
    for rid in created:
        owners.remember(rid, "p")
    owners.resize(smaller)
    recent = list(dict.fromkeys(reversed(created)))[:smaller]
    assert len(owners) == len(recent)
    assert all(owners.owner(rid) == "p" for rid in recent)

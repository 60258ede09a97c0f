from __future__ import annotations

import json
import random
from typing import Any, TypedDict

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from llmgw_proxy import config
from llmgw_proxy.policies import cache_key

CHAT = "chat/completions"
BODY: dict[str, Any] = {
    "model": "fast",
    "messages": [{"role": "user", "content": "Hello, wörld"}],
    "temperature": 0,
    "max_tokens": 20,
}


class Where(TypedDict, total=False):
    """Where a request goes, as `key` takes it: any of these instead of the defaults."""

    route: str
    provider: str
    upstream_model: str
    endpoint: str


def key(body: dict[str, Any], finite: bool = False, **where: str) -> str:
    args = {"route": "fast", "provider": "openai", "upstream_model": "gpt-4o-mini", "endpoint": CHAT}
    args.update(where)
    return cache_key.key(body=body, finite=finite, **args)


def test_a_key_is_sha256_hex_and_stable() -> None:
    first = key(BODY)
    assert len(first) == 64
    assert int(first, 16) >= 0
    assert key(json.loads(json.dumps(BODY))) == first


@pytest.mark.parametrize(
    "where",
    [
        pytest.param({"route": "slow"}, id="route"),
        pytest.param({"provider": "azure"}, id="provider"),
        pytest.param({"upstream_model": "gpt-4o"}, id="upstream-model"),
        pytest.param({"endpoint": "completions"}, id="endpoint"),
    ],
)
def test_where_the_request_goes_is_part_of_the_key(where: Where) -> None:
    assert key(BODY, **where) != key(BODY)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("stream", True, id="stream"),
        pytest.param("stream_options", {"include_usage": True}, id="stream-options"),
        pytest.param("user", "alice", id="user"),
        pytest.param("safety_identifier", "hash", id="safety-identifier"),
        pytest.param("prompt_cache_key", "k", id="prompt-cache-key"),
        pytest.param("store", True, id="store"),
        pytest.param("metadata", {"team": "a"}, id="metadata"),
    ],
)
def test_fields_that_do_not_change_the_output_do_not_change_the_key(field: str, value: object) -> None:
    assert key({**BODY, field: value}) == key(BODY)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        pytest.param("messages", [{"role": "user", "content": "Bye"}], id="messages"),
        pytest.param("temperature", 0.5, id="temperature"),
        pytest.param("max_tokens", 21, id="max-tokens"),
        pytest.param("seed", 7, id="seed"),
        pytest.param("n", 2, id="n"),
        pytest.param("tools", [{"type": "function", "function": {"name": "f"}}], id="tools"),
        pytest.param("response_format", {"type": "json_object"}, id="response-format"),
        pytest.param("a_parameter_openai_adds_next_year", 1, id="unknown-parameter"),
    ],
)
def test_every_other_field_changes_the_key(field: str, value: object) -> None:
    assert key({**BODY, field: value}) != key(BODY)


def test_integral_floats_and_integers_give_the_same_key() -> None:
    assert key({**BODY, "temperature": 0.0, "max_tokens": 20.0}) == key(BODY)


def test_non_ascii_and_lone_surrogates_are_keyed_without_error() -> None:
    assert key({**BODY, "messages": [{"role": "user", "content": "\ud800 日本"}]}) != key(BODY)


json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)
bodies = st.dictionaries(st.text(min_size=1, max_size=10), json_values, max_size=8)


def shuffled(value: Any, rng: random.Random) -> Any:
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: shuffled(v, rng) for k, v in items}
    if isinstance(value, list):
        return [shuffled(v, rng) for v in value]
    return value


@given(body=bodies, seed=st.integers(0, 1000), indent=st.sampled_from([None, 0, 2]))
def test_the_key_survives_reordering_and_reserialization(
    body: dict[str, Any], seed: int, indent: int | None
) -> None:
    text = json.dumps(shuffled(body, random.Random(seed)), indent=indent, ensure_ascii=seed % 2 == 0)
    assert key(json.loads(text)) == key(body)


@given(body=bodies, field=st.text(min_size=1, max_size=10), value=json_values)
def test_changing_any_output_field_changes_the_key(body: dict[str, Any], field: str, value: Any) -> None:
    assume(field not in cache_key.NON_OUTPUT_FIELDS)
    # Python's == already equates 1 and 1.0 (one JSON number) at any depth
    assume(field not in body or body[field] != value)
    assert key({**body, field: value}) != key(body)


finite_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)
finite_bodies = st.dictionaries(st.text(min_size=1, max_size=10), finite_values, max_size=8)


@given(
    body=finite_bodies, seed=st.integers(0, 1000), field=st.text(min_size=1, max_size=10), value=finite_values
)
def test_a_body_known_to_be_finite_is_keyed_by_its_value_alone(
    body: dict[str, Any], seed: int, field: str, value: Any
) -> None:
    # The pipeline says `finite` when orjson decoded the body; the key skips its NaN check then.
    reordered = json.loads(json.dumps(shuffled(body, random.Random(seed)), indent=seed % 3))
    assert key(reordered, finite=True) == key(body, finite=True)
    assert key({**body, "seed": 1.0}, finite=True) == key({**body, "seed": 1}, finite=True)
    assume(field not in cache_key.NON_OUTPUT_FIELDS)
    assume(field not in body or body[field] != value)
    assert key({**body, field: value}, finite=True) != key(body, finite=True)


def policy(mode: config.CacheMode = config.CacheMode.DETERMINISTIC) -> config.CachePolicy:
    return config.CachePolicy(enabled=True, mode=mode)


@pytest.mark.parametrize(
    ("endpoint", "body", "expected"),
    [
        pytest.param(CHAT, {"temperature": 0}, True, id="temperature-zero"),
        pytest.param(CHAT, {"temperature": 0.0}, True, id="temperature-zero-float"),
        pytest.param(CHAT, {"temperature": 0.7, "seed": 42}, True, id="seeded"),
        pytest.param(CHAT, {"temperature": 0, "n": 3}, True, id="n-does-not-matter"),
        pytest.param(CHAT, {}, False, id="default-temperature"),
        pytest.param(CHAT, {"temperature": 0.7}, False, id="sampling"),
        pytest.param(CHAT, {"temperature": False}, False, id="bool-is-not-zero"),
        pytest.param(CHAT, {"seed": None}, False, id="null-seed"),
        pytest.param("completions", {"temperature": 0}, True, id="completions"),
        pytest.param("embeddings", {}, True, id="embeddings-always"),
        pytest.param("images/generations", {"temperature": 0}, False, id="unknown-endpoint"),
    ],
)
def test_deterministic_mode_caches_only_reproducible_requests(
    endpoint: str, body: dict[str, Any], expected: bool
) -> None:
    assert cache_key.cacheable(policy(), endpoint, body) is expected


def test_mode_all_caches_sampled_requests_too() -> None:
    assert cache_key.cacheable(policy(config.CacheMode.ALL), CHAT, {"temperature": 1.2})


def test_a_disabled_cache_caches_nothing() -> None:
    assert not cache_key.cacheable(config.CachePolicy(enabled=False), CHAT, {"temperature": 0})


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param(None, cache_key.Decision.USE, id="absent"),
        pytest.param("", cache_key.Decision.USE, id="empty"),
        pytest.param("max-age=60", cache_key.Decision.USE, id="unrelated"),
        pytest.param("no-store", cache_key.Decision.BYPASS, id="no-store"),
        pytest.param("No-Cache", cache_key.Decision.REFRESH, id="no-cache-any-case"),
        pytest.param("max-age=0", cache_key.Decision.REFRESH, id="max-age-zero"),
        pytest.param("no-cache, no-store", cache_key.Decision.BYPASS, id="no-store-wins"),
    ],
)
def test_cache_control_can_refresh_or_bypass(header: str | None, expected: cache_key.Decision) -> None:
    assert cache_key.decide(policy(), CHAT, {"temperature": 0}, header) is expected


def test_an_uncacheable_request_bypasses_whatever_the_header() -> None:
    assert cache_key.decide(policy(), CHAT, {"temperature": 1}, None) is cache_key.Decision.BYPASS


@pytest.mark.parametrize(
    ("one", "other"),
    [
        pytest.param(float("nan"), None, id="nan-is-not-null"),
        pytest.param(float("inf"), None, id="infinity-is-not-null"),
        pytest.param(float("inf"), float("-inf"), id="infinities-differ"),
        pytest.param(2**64, 2**64 + 1, id="integers-past-64-bits"),
    ],
)
def test_values_the_fast_encoder_cannot_write_still_get_distinct_keys(one: object, other: object) -> None:
    assert key({**BODY, "x": one}) != key({**BODY, "x": other})


@pytest.mark.parametrize(
    ("one", "other"),
    [
        pytest.param(1e20, 10**20, id="integral-float-past-64-bits"),
        pytest.param(2**64, float(2**64), id="integer-past-64-bits"),
        pytest.param(-0.0, 0, id="negative-zero"),
        pytest.param("\ud800", "\ud800", id="lone-surrogate"),
    ],
)
def test_equal_values_the_fast_encoder_cannot_write_share_a_key(one: object, other: object) -> None:
    assert key({**BODY, "x": [one]}) == key({**BODY, "x": [other]})

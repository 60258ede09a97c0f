from __future__ import annotations

import pytest

from llmgw_proxy.policies import tokens


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("", 0, id="empty"),
        pytest.param("abcd", 1, id="four-chars"),
        pytest.param("abcde", 2, id="rounds-up"),
        pytest.param("x" * 400, 100, id="long"),
    ],
)
def test_text_counts_one_token_per_four_characters(value: str, expected: int) -> None:
    assert tokens.text(value) == expected


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        pytest.param("a" * 8, 3 + 4 + 2, id="string"),
        pytest.param([{"type": "text", "text": "a" * 8}], 3 + 4 + 2, id="text-part"),
        pytest.param(
            [{"type": "text", "text": "a" * 8}, {"type": "image_url", "image_url": {"url": "x"}}],
            3 + 4 + 2 + 85,
            id="image-part",
        ),
        pytest.param(None, 3 + 4, id="no-content"),
    ],
)
def test_chat_messages_count_overhead_and_content(content: object, expected: int) -> None:
    assert tokens.messages([{"role": "user", "content": content}]) == expected


def test_chat_counts_tool_calls_and_names() -> None:
    call = [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    plain = tokens.messages([{"role": "assistant", "content": None}])
    assert tokens.messages([{"role": "assistant", "content": None, "tool_calls": call}]) > plain
    assert tokens.messages([{"role": "user", "content": None, "name": "alice"}]) == plain + 2


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param("a" * 12, 3, id="string"),
        pytest.param(["a" * 4, "b" * 8], 3, id="list-of-strings"),
        pytest.param([1, 2, 3, 4, 5], 5, id="token-ids"),
        pytest.param([[1, 2], [3]], 3, id="lists-of-token-ids"),
        pytest.param(None, 0, id="missing"),
    ],
)
def test_prompts_and_inputs_take_text_or_token_ids(value: object, expected: int) -> None:
    assert tokens.prompt(value) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param({}, 256, id="policy-default"),
        pytest.param({"max_tokens": 10}, 10, id="max-tokens"),
        pytest.param({"max_tokens": 10, "max_completion_tokens": 20}, 20, id="max-completion-tokens-wins"),
        pytest.param({"max_tokens": 10, "n": 3}, 30, id="times-n"),
        pytest.param({"max_tokens": True}, 256, id="bool-is-not-a-number"),
    ],
)
def test_the_completion_budget_follows_the_request(body: dict[str, object], expected: int) -> None:
    assert tokens.completion_budget(body, 256) == expected


def test_a_chat_reservation_is_the_prompt_plus_the_budget() -> None:
    body = {"messages": [{"role": "user", "content": "a" * 40}], "max_tokens": 100}
    assert tokens.reservation(tokens.CHAT, body, 256) == 3 + 4 + 10 + 100


def test_a_completions_reservation_uses_the_prompt() -> None:
    assert tokens.reservation(tokens.COMPLETIONS, {"prompt": "a" * 40}, 50) == 10 + 50


def test_an_embeddings_reservation_has_no_completion_budget() -> None:
    assert tokens.reservation(tokens.EMBEDDINGS, {"input": ["a" * 40, "b" * 4]}, 256) == 11


def test_tools_count_toward_the_prompt() -> None:
    body = {"messages": [], "tools": [{"type": "function", "function": {"name": "lookup"}}]}
    assert tokens.asked(tokens.CHAT, body) > tokens.asked(tokens.CHAT, {"messages": []})


def test_an_unknown_endpoint_is_estimated_from_the_whole_body() -> None:
    assert tokens.reservation("responses", {"input": "a" * 100}, 10) > 10 + 25


def test_a_stream_without_usage_settles_on_the_prompt_plus_the_streamed_text() -> None:
    body = {"messages": [{"role": "user", "content": "a" * 40}], "max_tokens": 100}
    assert tokens.streamed(tokens.CHAT, body, "b" * 20) == 3 + 4 + 10 + 5

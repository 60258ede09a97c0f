"""The pure parts of the API families: usage shapes, typed stream reading, token estimates, config rules."""

from __future__ import annotations

import json

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmgw_proxy import config
from llmgw_proxy.apis import events, usage
from llmgw_proxy.policies import tokens


@pytest.mark.parametrize(
    ("reported", "expected"),
    [
        pytest.param(
            {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}, (3, 4, 7), id="chat-unchanged"
        ),
        pytest.param({"input_tokens": 5, "output_tokens": 6, "total_tokens": 11}, (5, 6, 11), id="responses"),
        pytest.param(
            {
                "input_tokens": 5,
                "cache_creation_input_tokens": 100,
                "cache_read_input_tokens": 1000,
                "output_tokens": 6,
            },
            (1105, 6, 1111),
            id="anthropic-with-cache",
        ),
        pytest.param({"input_tokens": 5, "output_tokens": None}, (5, None, 5), id="anthropic-partial"),
    ],
)
def test_usage_is_read_in_one_shape_whatever_the_family(
    reported: dict[str, object], expected: tuple[int | None, ...]
) -> None:
    out = usage.normalized(reported)
    assert out is not None
    assert (out.get("prompt_tokens"), out.get("completion_tokens"), out.get("total_tokens")) == expected


def _anthropic_stream() -> bytes:
    def event(kind: str, **data: object) -> bytes:
        return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n".encode()

    message = {"id": "msg_1", "usage": {"input_tokens": 7, "output_tokens": 1}}
    return b"".join(
        [
            event("message_start", message=message),
            event("ping"),
            event("content_block_delta", index=0, delta={"type": "text_delta", "text": "Hello there"}),
            event("message_delta", delta={"stop_reason": "end_turn"}, usage={"output_tokens": 9}),
            event("message_stop"),
        ]
    )


def _responses_stream() -> bytes:
    def event(kind: str, seq: int, **data: object) -> bytes:
        return (
            f"event: {kind}\ndata: {json.dumps({'type': kind, 'sequence_number': seq, **data})}\n\n".encode()
        )

    done = {"id": "resp_1", "usage": {"input_tokens": 4, "output_tokens": 2, "total_tokens": 6}}
    return b"".join(
        [
            event("response.created", 0, response={"id": "resp_1", "usage": None}),
            event("response.output_text.delta", 1, delta="Hi you"),
            event("response.completed", 2, response=done),
        ]
    )


@pytest.mark.parametrize(
    ("stream", "expected"),
    [
        pytest.param(_anthropic_stream(), ("msg_1", 7, 9, 16, 4), id="anthropic"),
        pytest.param(_responses_stream(), ("resp_1", 4, 2, 6, 2), id="responses"),
    ],
)
@given(data=st.data())
def test_a_typed_stream_yields_its_id_and_usage_however_it_is_cut_and_goes_out_unchanged(
    stream: bytes, expected: tuple[object, ...], data: st.DataObject
) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    reader = events.EventReader(keep=True, text=True)
    out = b""
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        out += reader.filter(stream[start:end])
    out += reader.finish()
    assert out == stream
    assert reader.usage is not None
    got = (
        reader.response_id,
        reader.usage["prompt_tokens"],
        reader.usage["completion_tokens"],
        reader.usage["total_tokens"],
        reader.last_sequence,
    )
    assert got == expected


def test_the_text_of_a_typed_stream_is_kept_for_the_estimate_when_no_usage_comes() -> None:
    cut_short = _anthropic_stream().split(b"event: message_start")[1].split(b"event: message_delta")[0]
    reader = events.EventReader(keep=False, text=True)
    reader.filter(b"event: ping\ndata: {}\n\nevent: message_start" + cut_short)  # no usage came
    assert reader.usage is None
    assert reader.text() == "Hello there"
    complete = events.EventReader(keep=False, text=True)
    complete.filter(_anthropic_stream())
    assert complete.text() == ""  # the usage came: nothing to estimate


@pytest.mark.parametrize(
    ("endpoint", "body", "expected"),
    [
        pytest.param(
            "responses", {"input": "abcdefgh", "max_output_tokens": 50}, 3 + 2 + 50, id="responses-text-input"
        ),
        pytest.param(
            "responses",
            {
                "input": [{"role": "user", "content": [{"type": "input_text", "text": "abcd"}]}],
                "instructions": "ab",
            },
            3 + 4 + 1 + 1 + 256,
            id="responses-items-default-budget",
        ),
        pytest.param(
            "messages",
            {"system": "abcd", "messages": [{"role": "user", "content": "abcdefgh"}], "max_tokens": 10},
            1 + 3 + 4 + 2 + 10,
            id="messages",
        ),
        pytest.param("audio/transcriptions", {"model": "whisper-1"}, 0, id="relayed-reserves-nothing"),
    ],
)
def test_reservations_count_each_familys_input_and_output_budget(
    endpoint: str, body: dict[str, object], expected: int
) -> None:
    assert tokens.reservation(endpoint, body, 256) == expected


def _doc(routes: list[dict[str, object]]) -> dict[str, object]:
    return {
        "version": 1,
        "providers": {
            "o": {"kind": "openai", "baseUrl": "http://127.0.0.1:1/v1"},
            "az": {"kind": "azure-openai", "baseUrl": "http://127.0.0.1:2", "apiVersion": "2024-10-21"},
            "a": {"kind": "anthropic", "baseUrl": "http://127.0.0.1:3/v1"},
        },
        "routes": routes,
    }


@pytest.mark.parametrize(
    ("route", "message"),
    [
        pytest.param(
            {"model": "m", "targets": [{"provider": "o"}, {"provider": "a"}]},
            "targets mix API families (anthropic, openai)",
            id="openai-and-anthropic-targets",
        ),
        pytest.param(
            {"model": "m", "targets": [{"provider": "o"}], "endpoints": ["messages"]},
            "endpoint 'messages' is not served by openai providers",
            id="messages-on-openai",
        ),
        pytest.param(
            {"model": "m", "targets": [{"provider": "a"}], "endpoints": ["chat/completions"]},
            "endpoint 'chat/completions' is not served by anthropic providers",
            id="chat-on-anthropic",
        ),
        pytest.param(
            {"model": "m", "targets": [{"provider": "a"}], "endpoints": ["messages", "chat/completions"]},
            "'messages' is Anthropic's, not to be served by a route with OpenAI endpoints",
            id="families-mixed-in-endpoints",
        ),
        pytest.param(
            {"model": "m", "targets": [{"provider": "az"}], "endpoints": ["audio"]},
            "relayed endpoint 'audio' is not supported for azure-openai providers",
            id="relay-on-azure",
        ),
        pytest.param(
            {"model": "m", "targets": [{"provider": "o"}], "endpoints": ["../admin"]},
            "is not a path after /v1/",
            id="not-a-path",
        ),
    ],
)
def test_the_config_refuses_a_route_that_mixes_api_families(route: dict[str, object], message: str) -> None:
    with pytest.raises(pydantic.ValidationError) as refused:
        config.parse(_doc([route]))
    assert message in str(refused.value)


def test_declared_endpoints_are_normalised_and_decide_what_a_route_serves() -> None:
    route: dict[str, object] = {
        "model": "m",
        "targets": [{"provider": "o"}],
        "endpoints": ["responses", "audio/*", "/files/"],
    }
    cfg = config.parse(_doc([route]))
    served = cfg.routes[0]
    assert served.endpoints == ("responses", "audio", "files")
    family = cfg.family(served)
    assert [served.serves(e, family) for e in ("responses", "audio/speech", "files/f1/content")] == [True] * 3
    assert [served.serves(e, family) for e in ("chat/completions", "images/generations", "audios")] == [
        False
    ] * 3
    default = config.parse(_doc([{"model": "m", "targets": [{"provider": "a"}]}])).routes[0]
    assert default.serves("messages", config.ApiFamily.ANTHROPIC)
    assert not default.serves("audio/speech", config.ApiFamily.ANTHROPIC)

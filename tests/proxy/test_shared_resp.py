"""The store's own command packing says exactly what redis-py's would."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.asyncio.connection import Connection

from llmgw_proxy.shared import resp

PART = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=40),
    st.integers(min_value=-(10**18), max_value=10**18),
    st.floats(allow_nan=False, allow_infinity=False),
)


@given(st.sampled_from([b"EVALSHA", "SCRIPT"]), st.lists(PART, max_size=30))
def test_packed_like_redis_py(command: bytes | str, parts: list[bytes | str | int | float]) -> None:
    assert resp.pack(command, *parts) == b"".join(Connection().pack_command(command, *parts))


def test_equal_numbers_of_other_types_keep_their_own_bytes() -> None:
    # The cache of encoded parts must not answer 1.0 with the bytes of 1 (equal dict keys).
    assert resp.pack(b"X", 1, 1.0) == b"*3\r\n$1\r\nX\r\n$1\r\n1\r\n$3\r\n1.0\r\n"
    assert resp.pack(b"X", 1.0, 1) == b"*3\r\n$1\r\nX\r\n$3\r\n1.0\r\n$1\r\n1\r\n"


# Replies as Redis sends them (RESP2), with the value redis-py's parser reads from each.
LEAF = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1).map(lambda i: (b":%d\r\n" % i, i)),
    st.binary(max_size=30).map(lambda b: (b"$%d\r\n%s\r\n" % (len(b), b), b)),
    st.just((b"$-1\r\n", None)),
    st.just((b"+OK\r\n", b"OK")),
)
REPLY = st.recursive(
    LEAF,
    lambda items: st.lists(items, max_size=5).map(
        lambda xs: (b"*%d\r\n" % len(xs) + b"".join(x[0] for x in xs), [x[1] for x in xs])
    ),
    max_leaves=20,
)


@given(REPLY, st.data())
def test_a_reply_is_read_whole_and_only_once_all_its_bytes_are_there(
    reply: tuple[bytes, object], data: st.DataObject
) -> None:
    raw, value = reply
    cut = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    with pytest.raises(resp.Incomplete):
        resp.parse(raw[:cut])
    assert resp.parse(bytearray(raw)) == (value, len(raw))


def test_an_error_reply_is_a_value_and_junk_is_a_protocol_error() -> None:
    error, end = resp.parse(b"-NOSCRIPT No matching script.\r\n")
    assert isinstance(error, resp.ReplyError) and error.startswith("NOSCRIPT") and end == 31
    for junk in (b"?x\r\n", b":12a\r\n", b"\r\n", b"$3\r\nabcde\r\n", b"*" * 1 + b"1\r\n" * 1 + b"!\r\n"):
        with pytest.raises(resp.ProtocolError):
            resp.parse(junk)
    deep = b"*1\r\n" * (resp.MAX_DEPTH + 1) + b":1\r\n"
    with pytest.raises(resp.ProtocolError):
        resp.parse(deep)


def test_zero_and_negative_zero_keep_their_own_bytes() -> None:
    # 0.0 == -0.0 (one dict key) but redis-py sends "0.0" and "-0.0".
    assert resp.pack(b"X", 0.0, -0.0) == b"*3\r\n$1\r\nX\r\n$3\r\n0.0\r\n$4\r\n-0.0\r\n"
    assert resp.pack(b"X", -0.0, 0.0) == b"*3\r\n$1\r\nX\r\n$4\r\n-0.0\r\n$3\r\n0.0\r\n"

"""The store's own command packing says exactly what redis-py's would."""

from __future__ import annotations

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

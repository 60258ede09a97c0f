"""A Redis command as the bytes redis-py would send (RESP), packed without redis-py's encoder.

redis-py's ``pack_command`` costs about 0.1 ms per script call here (an encode
and a type check per argument); the store sends one command per batch on
redis-py's own connection (which still connects, authenticates, follows
Sentinel and reads the reply), so this packs it. Same encoding as redis-py:
str as UTF-8, int in decimal, float as ``repr``.
"""

from __future__ import annotations

_PARTS: dict[tuple[type, bytes | str | int | float], bytes] = {}
MAX_CACHED = 4096
"""Encoded parts kept: a policy's keys, rates, bursts and waits repeat on every call, so each is
formatted once; the cache is emptied when full (token counts and budget TTLs vary)."""


def pack(*parts: bytes | str | int | float) -> bytes:
    get = _PARTS.get
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        key = (part.__class__, part)  # the class too: 1, 1.0 and True are equal keys, not equal bytes
        encoded = get(key)
        if encoded is None:
            data = part if isinstance(part, bytes) else str(part).encode()  # str(float) is repr
            encoded = b"$%d\r\n%s\r\n" % (len(data), data)
            if len(_PARTS) >= MAX_CACHED:
                _PARTS.clear()
            if part or part.__class__ is not float:  # 0.0 and -0.0 are one key, not one encoding
                _PARTS[key] = encoded
        out.append(encoded)
    return b"".join(out)


MAX_DEPTH = 8
"""Nesting read at most: the batch script answers two levels (a list of each call's list)."""


class Incomplete(Exception):
    """The buffer ends before the reply does: wait for more bytes."""


class ProtocolError(ValueError):
    """Not a RESP2 reply: the connection cannot be trusted any longer."""


class ReplyError(str):
    """An error reply (``-NOSCRIPT ...``, ``-ERR ...``): Redis answered, the command failed."""

    __slots__ = ()


def parse(buf: bytes | bytearray, pos: int = 0, depth: int = 0) -> tuple[object, int]:
    """The RESP2 reply starting at ``pos`` and where it ends, as redis-py's parser reads it (bulk
    and simple strings as bytes, integers as int, nil as None); raises Incomplete or ProtocolError."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise Incomplete
    if end == pos:
        raise ProtocolError("empty line")
    kind, after = buf[pos], end + 2
    try:
        if kind == 58:  # ':'
            return int(buf[pos + 1 : end]), after
        if kind == 42:  # '*'
            count = int(buf[pos + 1 : end])
            if count < 0:
                return None, after
            if depth >= MAX_DEPTH:
                raise ProtocolError("nested too deep")
            items = []
            for _ in range(count):
                item, after = parse(buf, after, depth + 1)
                items.append(item)
            return items, after
        if kind == 36:  # '$'
            size = int(buf[pos + 1 : end])
            if size < 0:
                return None, after
            if len(buf) < after + size + 2:
                raise Incomplete
            if buf[after + size : after + size + 2] != b"\r\n":
                raise ProtocolError("bulk string without its CRLF")
            return bytes(buf[after : after + size]), after + size + 2
        if kind == 43:  # '+'
            return bytes(buf[pos + 1 : end]), after
        if kind == 45:  # '-'
            return ReplyError(bytes(buf[pos + 1 : end]).decode(errors="replace")), after
    except ValueError as exc:  # int() of something else than a number (ProtocolError is one too)
        if isinstance(exc, ProtocolError):
            raise
        raise ProtocolError(str(exc)) from None
    raise ProtocolError(f"unknown reply type {chr(kind)!r}")

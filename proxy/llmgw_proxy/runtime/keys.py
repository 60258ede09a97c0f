"""Provider keys, read from files (a mounted Secret), validated, and never logged.

A key lives in memory only inside ``Key``, whose repr hides it, so an
accidental ``log.info("%r", key)`` or an f-string in an error leaks nothing.

A key goes into an HTTP header as it is, so ``read`` refuses what would break
that header or every request made with it: a file that is not UTF-8, a key
with a control character or whitespace inside (an embedded newline used to
turn every request into a 502 counted against the provider), a character
outside printable ASCII, or more than ``MAX_KEY_BYTES``. Whitespace around
the key, such as the trailing newline ``echo`` and most editors add, is
stripped. A refusal's message names the file and the reason, never a byte of
the key, and carries one of the bounded ``REASONS`` codes for the metrics and
``/readyz``.
"""

from __future__ import annotations

import os

from llmgw_proxy import config

MAX_KEY_BYTES = 8192
"""Largest key file read; real provider keys are well under 300 bytes."""

UNREADABLE = "key_unreadable"
EMPTY = "key_empty"
NOT_UTF8 = "key_not_utf8"
BAD_CHARACTER = "key_invalid_character"
TOO_LONG = "key_too_long"
REASONS = (UNREADABLE, EMPTY, NOT_UTF8, BAD_CHARACTER, TOO_LONG)


class Key:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Key(***)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Key) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class KeyFileError(Exception):
    """A key file that cannot serve; ``reason`` is one of ``REASONS``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def read(path: str) -> Key:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_KEY_BYTES + 1)
    except OSError as exc:
        raise KeyFileError(UNREADABLE, f"cannot read key file {path}: {exc.strerror}") from None
    if len(raw) > MAX_KEY_BYTES:
        raise KeyFileError(TOO_LONG, f"key file {path} is longer than {MAX_KEY_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        # The position only: the offending byte is part of the key.
        raise KeyFileError(NOT_UTF8, f"key file {path} is not UTF-8 (at byte {exc.start})") from None
    value = text.strip()
    if not value:
        raise KeyFileError(EMPTY, f"key file {path} is empty")
    for at, char in enumerate(value):
        if not ("!" <= char <= "~"):  # printable ASCII, no space: what a header value may carry
            kind = "whitespace or a control character" if char.isspace() or ord(char) < 32 else "non-ASCII"
            raise KeyFileError(
                BAD_CHARACTER, f"key file {path} holds {kind} inside the key (at character {at})"
            )
    return Key(value)


def load_all(cfg: config.ProxyConfig, base_dir: str = "") -> dict[str, Key | None]:
    """Every provider's key; providers without a key file get None (e.g. a local model server)."""
    return {
        name: read(os.path.join(base_dir, p.api_key_file)) if p.api_key_file else None
        for name, p in cfg.providers.items()
    }


def auth_headers(kind: config.ProviderKind, key: Key | None) -> dict[str, str]:
    if key is None:
        return {}
    if kind is config.ProviderKind.AZURE_OPENAI:
        return {"api-key": key.reveal()}
    return {"Authorization": "Bearer " + key.reveal()}

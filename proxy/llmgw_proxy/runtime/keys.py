"""Provider keys, read from files (a mounted Secret), validated, and never logged.

A key lives in memory only inside ``Key``, whose repr hides it, so an
accidental ``log.info("%r", key)`` or an f-string in an error leaks nothing.

``read`` refuses a key file that ``config.check_key`` refuses (the rule the
operator applies too), with a message naming the file and the reason, never a
byte of the key, and one of the bounded ``REASONS`` codes for the metrics and
``/readyz``.
"""

from __future__ import annotations

import os

from llmgw_proxy import config

UNREADABLE = "key_unreadable"
REASONS = (
    UNREADABLE,
    config.KEY_EMPTY,
    config.KEY_NOT_UTF8,
    config.KEY_INVALID_CHARACTER,
    config.KEY_TOO_LONG,
)


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
            raw = f.read(config.MAX_KEY_BYTES + 1)
    except OSError as exc:
        raise KeyFileError(UNREADABLE, f"cannot read key file {path}: {exc.strerror}") from None
    checked = config.check_key(raw)
    if isinstance(checked, config.KeyProblem):
        raise KeyFileError(checked.reason, f"key file {path} {checked.detail}")
    return Key(checked)


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
    if kind is config.ProviderKind.ANTHROPIC:
        return {"x-api-key": key.reveal()}
    return {"Authorization": "Bearer " + key.reveal()}

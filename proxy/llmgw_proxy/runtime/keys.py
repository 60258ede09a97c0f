"""Provider keys, read from files (a mounted Secret) and never logged.

A key lives in memory only inside ``Key``, whose repr hides it, so an
accidental ``log.info("%r", key)`` or an f-string in an error leaks nothing.
"""

from __future__ import annotations

import os

from llmgw_proxy import config


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
    pass


def read(path: str) -> Key:
    try:
        with open(path, encoding="utf-8") as f:
            value = f.read().strip()
    except OSError as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc.strerror}") from None
    if not value:
        raise KeyFileError(f"key file {path} is empty")
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

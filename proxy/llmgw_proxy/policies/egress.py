"""Which way a request leaves the pod, and in which order to try a host's addresses.

Pure: no sockets, no environment, no clock. ``upstream.dial`` does the I/O.

- ``choose`` picks the forward proxy for one upstream URL from the
  ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``NO_PROXY`` settings (taken from the
  config or the environment, both as strings), or None to go direct;
- ``parse_proxy`` (from ``config``, which validates with it) splits a proxy
  URL into its address and optional credentials, so the credentials never
  travel with the address into a message or a log line;
- ``interleave`` orders resolved addresses as RFC 8305 section 4 says
  (alternate the families, the first family first), so when one family is
  black-holed the next attempt, started ``stagger`` seconds later, is one of
  the other family.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Sequence
from typing import TypeVar

from llmgw_proxy.config import ProxyAddress, ProxyUrlError, parse_proxy

__all__ = [
    "ProxyAddress",
    "ProxySettings",
    "ProxyUrlError",
    "bypasses",
    "choose",
    "interleave",
    "parse_proxy",
]

MAX_NO_PROXY_ENTRIES = 256
"""Entries of ``NO_PROXY`` considered; the rest are ignored (a list that long is a mistake)."""


def _no_proxy_entries(no_proxy: str) -> list[str]:
    entries = [e.strip().lower() for e in no_proxy.replace(" ", ",").split(",")]
    return [e for e in entries if e][:MAX_NO_PROXY_ENTRIES]


def bypasses(no_proxy: str, host: str, port: int) -> bool:
    """Whether ``NO_PROXY`` says to reach ``host``:``port`` directly.

    Entries, comma- or space-separated: ``*`` (everything); a domain, with or
    without a leading dot, matching itself and its subdomains; an IP address;
    a CIDR block, matching IP literals inside it; any of those with ``:port``
    to match that port only. Case-insensitive; IPv6 hosts may be bracketed.
    """
    host = host.lower().strip("[]").rstrip(".")
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for entry in _no_proxy_entries(no_proxy):
        if entry == "*":
            return True
        name, entry_port = _split_port(entry)
        if entry_port is not None and entry_port != port:
            continue
        if "/" in name:
            try:
                network = ipaddress.ip_network(name, strict=False)
            except ValueError:
                continue
            if address is not None and address.version == network.version and address in network:
                return True
            continue
        name = name.strip("[]").lstrip("*").lstrip(".").rstrip(".")
        if not name:
            continue
        if address is not None:
            try:
                if ipaddress.ip_address(name) == address:
                    return True
            except ValueError:
                pass
            continue
        if host == name or host.endswith("." + name):
            return True
    return False


def _split_port(entry: str) -> tuple[str, int | None]:
    """``name:port`` -> (name, port); an IPv6 address or CIDR without brackets keeps its colons."""
    if entry.startswith("["):
        close = entry.find("]")
        rest = entry[close + 1 :] if close > 0 else ""
        if rest.startswith(":") and rest[1:].isdigit():
            return entry[: close + 1], int(rest[1:])
        return entry, None
    if entry.count(":") == 1:
        name, _, port = entry.partition(":")
        if port.isdigit():
            return name, int(port)
    return entry, None


@dataclasses.dataclass(frozen=True, slots=True)
class ProxySettings:
    """The three variables, as strings (empty: unset)."""

    https_proxy: str = ""
    http_proxy: str = ""
    no_proxy: str = ""

    @classmethod
    def from_environment(cls, env: dict[str, str]) -> ProxySettings:
        """The upper-case name first, then the lower-case one (curl reads only lower-case
        ``http_proxy``; the sidecar reads both, as Go and Python's urllib do)."""

        def get(name: str) -> str:
            return env.get(name.upper()) or env.get(name) or ""

        return cls(get("https_proxy"), get("http_proxy"), get("no_proxy"))


def choose(settings: ProxySettings, scheme: str, host: str, port: int) -> str | None:
    """The proxy URL to use for one upstream origin, or None to connect directly."""
    url = settings.https_proxy if scheme == "https" else settings.http_proxy
    if not url:
        return None
    if settings.no_proxy and bypasses(settings.no_proxy, host, port):
        return None
    return url


T = TypeVar("T")


def interleave(addresses: Sequence[tuple[int, T]]) -> list[tuple[int, T]]:
    """(family, address) pairs in connection-attempt order (RFC 8305 section 4).

    The first address's family goes first; then the families alternate, each
    keeping its own resolver order; when one runs out the rest of the others
    follow. Duplicates are dropped.
    """
    seen: set[tuple[int, T]] = set()
    by_family: dict[int, list[tuple[int, T]]] = {}
    for item in addresses:
        if item in seen:
            continue
        seen.add(item)
        by_family.setdefault(item[0], []).append(item)
    queues = list(by_family.values())  # dicts keep insertion order: the first family first
    out: list[tuple[int, T]] = []
    while queues:
        for queue in queues:
            out.append(queue.pop(0))
        queues = [q for q in queues if q]
    return out

"""The open-file limit the listeners' caps need, raised at start.

Every connection is a file descriptor, and a proxied request holds two (the
caller's and the provider's). Container runtimes commonly start a process with
a soft limit of 1,024 (containerd 2 does, by the kernel's default) under a hard
limit in the hundreds of thousands; at the soft limit ``accept`` fails with
EMFILE and callers wait in the listen queue, however high ``listen.maxConnections``
is. So the sidecar raises its own soft limit, as far as the hard limit allows,
to what its caps can use; a hard limit below that is logged once.
"""

from __future__ import annotations

import logging
import resource

from llmgw_proxy import config

log = logging.getLogger("llmgw.server")

SPARE = 256
"""Descriptors for everything that is not a connection: the event loop, log and key files, the
shared store's and the tracing exporter's connections."""


def needed(cfg: config.ProxyConfig) -> int:
    """Descriptors the config's caps can use at once: each API connection may hold one upstream."""
    return 2 * cfg.listen.max_connections + cfg.admin.max_connections + SPARE


def raise_soft_limit(want: int) -> tuple[int, int]:
    """Raise the soft ``RLIMIT_NOFILE`` to ``want``, at most to the hard limit; the (soft, hard) now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    infinite = resource.RLIM_INFINITY
    if soft != infinite and soft < want:
        soft = want if hard == infinite else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft, hard


def ensure(cfg: config.ProxyConfig) -> None:
    want = needed(cfg)
    soft, hard = raise_soft_limit(want)
    if soft != resource.RLIM_INFINITY and soft < want:
        log.warning(
            "the open-file limit is below what the connection caps need; connections past it wait",
            extra={"limit": soft, "hard_limit": hard, "needed": want},
        )

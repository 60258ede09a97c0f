"""A server the suite runs as a child process on loopback (Prometheus, Jaeger): its log in a
file, a bounded wait for a condition that fails naming the condition and the log's tail, and a
stop that cannot hang."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from llmgw_dev.cluster import free_port

__all__ = ["Child", "free_port", "stop_process"]

T = TypeVar("T")
POLL_SECONDS = 0.1


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """SIGTERM, then SIGKILL once ``timeout`` has passed: a stuck child never holds up the suite."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Child:
    def __init__(self, name: str, log: Path) -> None:
        self.name = name
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def launch(self, argv: Sequence[str]) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                list(argv), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_process(proc)

    def tail(self, lines: int = 30) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def wait(self, check: Callable[[], T], timeout: float, what: str) -> T:
        """Poll until ``check`` gives something true and return it; past ``timeout``, or when the
        child exits first, fail naming ``what`` with the log's tail."""
        deadline = time.monotonic() + timeout
        while not (result := check()):
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.proc.returncode})\n{self.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} within {timeout}s\n{self.tail()}")
            time.sleep(POLL_SECONDS)
        return result

"""Child processes that the demo and the benchmarks start and must always stop."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def running(
    argv: list[str], log: Path, env: dict[str, str] | None = None, grace: float = 20
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` with its output in ``log``; on exit SIGTERM its process group, then SIGKILL.

    A new session gives the child its own process group, so whatever it starts
    (``unshare`` runs the sidecar as a grandchild, for one) is stopped with it.
    """
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def stop_on_term() -> None:
    """From now on SIGTERM stops this process as Ctrl-C does, so its ``finally`` blocks run: the
    processes it started are stopped and its cluster taken down, as they are on Ctrl-C."""
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")

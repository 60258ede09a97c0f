"""The operator's flags for gateway pod templates become the rules the reconciler checks."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading

import pytest

from llmgw_operator import cli
from llmgw_operator.render import pod_rules


def test_without_flags_the_rules_are_the_defaults() -> None:
    assert cli.rules_of(cli.build_parser().parse_args([])) == pod_rules.Rules()


def test_each_flag_allows_its_part() -> None:
    argv = [
        "--allowed-service-account=app",
        "--allowed-service-account",
        "batch",
        "--allow-privileged",
        "--allow-host-namespaces",
        "--allow-host-path",
    ]
    assert cli.rules_of(cli.build_parser().parse_args(argv)) == pod_rules.Rules(
        service_accounts=frozenset({"app", "batch"}), privileged=True, host_namespaces=True, host_path=True
    )


def test_data_plane_polling_defaults_and_flags() -> None:
    from llmgw_operator import poll

    assert cli.polling_of(cli.build_parser().parse_args([])) == poll.Settings(15.0, 2.0, 64)
    assert poll.Settings().page_size == 500
    argv = ["--data-plane-period=0.5", "--data-plane-timeout=0.25", "--data-plane-concurrency=8"]
    argv += ["--data-plane-page-size=7", "--data-plane-rate=2.5"]
    assert cli.polling_of(cli.build_parser().parse_args(argv)) == poll.Settings(0.5, 0.25, 8, 7, 2.5)


def test_a_data_plane_period_out_of_bounds_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["--data-plane-period=0"],
        ["--data-plane-timeout=61"],
        ["--data-plane-concurrency=0"],
        ["--data-plane-page-size=0"],
        ["--data-plane-page-size=5001"],
        ["--data-plane-rate=0"],
    ):
        with pytest.raises(SystemExit):
            cli.build_parser().parse_args(argv)
    assert "must be more than 0" in capsys.readouterr().err


def test_peering_lifetime_and_watch_inactivity_defaults_and_bounds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    args = cli.build_parser().parse_args([])
    assert (args.peering_lifetime, args.watch_inactivity) == (10, 70.0)
    args = cli.build_parser().parse_args(["--peering-lifetime=30", "--watch-inactivity=15"])
    assert (args.peering_lifetime, args.watch_inactivity) == (30, 15.0)
    for argv in (["--peering-lifetime=1"], ["--watch-inactivity=0"]):
        with pytest.raises(SystemExit):
            cli.build_parser().parse_args(argv)


def test_the_loop_ends_without_waiting_for_a_worker_blocked_in_a_request() -> None:
    release = threading.Event()

    async def operator() -> None:
        # An API request stuck on a silent connection: its worker thread outlives the loop.
        asyncio.get_running_loop().run_in_executor(None, release.wait)
        await asyncio.sleep(0)

    try:
        stuck = cli.run(operator(), grace=0.05)
        assert len(stuck) == 1 and stuck[0].is_alive()
    finally:
        release.set()
    assert cli.run(asyncio.sleep(0), grace=0.05) == []


ARENAS_AFTER_THREADS = """
import ctypes, re, sys, tempfile, threading
from llmgw_operator import cli
assert cli.tune_malloc()
def churn():
    for _ in range(2000):
        kept = [bytearray(4096) for _ in range(20)]
        del kept
threads = [threading.Thread(target=churn) for _ in range(16)]
for t in threads: t.start()
for t in threads: t.join()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
with tempfile.NamedTemporaryFile(suffix=".xml") as f:
    fp = libc.fopen(f.name.encode(), b"w")
    libc.malloc_info(0, fp)
    libc.fclose(fp)
    print(len(re.findall(r'<heap nr=', open(f.name).read())))
"""


def test_api_threads_share_a_bounded_number_of_malloc_arenas() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", ARENAS_AFTER_THREADS], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert 1 <= int(out.stdout) <= cli.MALLOC_ARENAS

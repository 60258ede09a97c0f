"""A burst of new connections while the sidecar's loop is busy is queued whole, not dropped.

The kernel completes handshakes into a listening socket's accept queue without
the process; past the queue's length (the listen backlog) it drops them, and a
dropped caller waits for a SYN retransmit (1 s, then 3 s, ...). Here a real
``llmgw-proxy`` process is stopped (SIGSTOP), standing for a loop busy with
thousands of streams, and ``BURST`` connections are opened at once: every one
must complete its handshake, which at aiohttp's default backlog of 128 only
129 did. Then the process goes on and answers a request on each.
"""

from __future__ import annotations

import asyncio
import pathlib
import signal

import pytest

from llmgw_dev import fake_provider, loadkit

pytestmark = pytest.mark.slow

BURST = 600


async def _connect(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(host, port)


async def _probe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> bytes:
    writer.write(f"GET /v1/models HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    status = await reader.readline()
    writer.close()
    return status


async def test_a_burst_of_connections_while_the_sidecar_is_stopped_all_complete_their_handshake(
    tmp_path: pathlib.Path,
) -> None:
    fake = fake_provider.FakeProvider(record=False)
    path = tmp_path / "config.json"
    async with loadkit.fake_server(fake) as url:
        doc = {
            "version": 1,
            "providers": {"fake": {"baseUrl": url}},
            "routes": [{"model": "*", "targets": [{"provider": "fake"}]}],
        }
        loadkit.write_config(path, doc)
        async with loadkit.sidecar(path, tmp_path / "sidecar.log") as sidecar:
            host, port = sidecar.api.rsplit(":", 1)
            sidecar.proc.send_signal(signal.SIGSTOP)
            try:
                # Bounded: a connection dropped from a full queue would take its retransmits,
                # and while the process is stopped they are dropped again.
                done, pending = await asyncio.wait(
                    [asyncio.create_task(_connect(host, int(port))) for _ in range(BURST)], timeout=30
                )
            finally:
                sidecar.proc.send_signal(signal.SIGCONT)
            for task in pending:
                task.cancel()
            assert (len(done), len(pending)) == (BURST, 0)
            connections = [task.result() for task in done]
            statuses = await asyncio.wait_for(
                asyncio.gather(*(_probe(r, w, host) for r, w in connections)), timeout=120
            )
    assert all(s.startswith(b"HTTP/1.1 200") for s in statuses), {s[:20] for s in statuses}

"""A real redis-server on a free loopback port, for the shared-store tests: start, kill, start again.

The Debian package provides the binary (.ci/run installs it when missing). Nothing is persisted:
a restarted server starts empty, as a Redis without persistence does after a crash.
"""

from __future__ import annotations

import pathlib
import shutil
import socket
import subprocess
import time

from childkit import free_port, stop_process

READY_WITHIN = 10.0


class RedisServer:
    def __init__(
        self,
        workdir: pathlib.Path,
        port: int | None = None,
        password: str | None = None,
        extra: tuple[str, ...] = (),
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: apt-get install redis-server (.ci/run does)")
        self.binary = binary
        self.workdir = workdir
        self.port = port or free_port()
        self.password = password
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
            "--logfile",
            "",
        ]
        if self.password:
            args += ["--requirepass", self.password]
        if self.extra:  # a cluster node's state file, named by port so nodes do not share one
            args += [*self.extra, "--cluster-config-file", f"nodes-{self.port}.conf"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_WITHIN
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    answer = s.recv(64)
                if answer.startswith((b"+PONG", b"-NOAUTH")):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("redis-server did not answer PING in time")
            time.sleep(0.02)  # the server's own start-up: nothing to await but its socket

    def kill(self) -> None:
        """SIGKILL, as a crashed or partitioned Redis: no goodbye to the clients."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=10)
            self.process = None


class Sentinel:
    """A redis-server in Sentinel mode watching ``master`` as ``mymaster`` (quorum 1)."""

    def __init__(self, workdir: pathlib.Path, master: RedisServer) -> None:
        self.workdir = workdir
        self.master = master
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        conf = self.workdir / f"sentinel-{self.port}.conf"  # Sentinel rewrites its config file
        conf.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self.workdir}\n"
            f"sentinel monitor mymaster 127.0.0.1 {self.master.port} 1\n"
        )
        self.process = subprocess.Popen(
            [self.master.binary, str(conf), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + READY_WITHIN
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server --sentinel exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"SENTINEL get-master-addr-by-name mymaster\r\n")
                    if str(self.master.port).encode() in s.recv(256):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the sentinel did not name its master in time")
            time.sleep(0.02)  # the sentinel's own start-up: nothing to await but its socket

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=10)
            self.process = None


class Cluster:
    """Three redis-server masters joined into a Redis Cluster by ``redis-cli --cluster create``."""

    def __init__(self, workdir: pathlib.Path) -> None:
        self.nodes = [
            RedisServer(workdir, port=_cluster_port(), extra=("--cluster-enabled", "yes")) for _ in range(3)
        ]

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is not installed (it comes with redis-server's package)")
        addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
        subprocess.run(
            [cli, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        deadline = time.monotonic() + READY_WITHIN
        for node in self.nodes:
            while b"cluster_state:ok" not in _ask(node.port, b"CLUSTER INFO\r\n"):
                if time.monotonic() > deadline:
                    raise RuntimeError("the cluster did not turn ok in time")
                time.sleep(0.02)  # the nodes' gossip: nothing to await but their answer

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) exists and is free too."""
    while True:
        port = free_port()
        if port + 10_000 > 65_535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10_000))
            except OSError:
                continue
        return port


def _ask(port: int, command: bytes) -> bytes:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(command)
            return s.recv(4096)
    except OSError:
        return b""

"""`llmgw-dev sidecar`: the real sidecar, run on this machine with what the operator rendered.

On the local control plane kwok fakes the pods, so no container runs and
`kubectl port-forward` or `logs` have nothing to reach. This runs `llmgw-proxy`
here instead, exactly as the gateway's pods would: it reads the gateway's live
Deployment for the sidecar's command and volume mounts, fetches the ConfigMap
and Secret those volumes name, writes them the way kubelet does (a timestamped
folder behind an atomically swapped ``..data`` link) and mounts them at the
Deployment's mount paths in a private mount namespace (``unshare --mount`` over
an overlay of the mount's top folder, so the host is untouched). While it runs
it copies changes of the ConfigMap and Secret into the volumes every sync
period, as kubelet does, and the sidecar hot-reloads them.

The demo runs the sidecar through the same functions.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import datetime
import functools
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from llmgw_dev import cluster, processes

SIDECAR_CONTAINER = "llmgw-proxy"
SYNC_PERIOD = 2.0
"""Seconds between copies of the ConfigMap and Secret into the volumes (kubelet: about a minute)."""
READY_TIMEOUT = 30.0
"""How long ``run`` waits for the sidecar's first ``listening`` line and then its /readyz."""


T = TypeVar("T")


class SidecarError(RuntimeError):
    pass


class Kubelet:
    """Writes a volume the way kubelet does: a timestamped dir, ..data swapped atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True)

    def write(self, files: dict[str, bytes]) -> None:
        stamp = datetime.datetime.now(datetime.UTC).strftime("..%Y_%m_%d_%H_%M_%S.%f")
        target = self.root / stamp
        target.mkdir()
        for name, data in files.items():
            (target / name).write_bytes(data)
            (target / name).chmod(0o444)
            link = self.root / name
            if not link.is_symlink():
                link.symlink_to(Path("..data") / name)
        tmp = self.root / "..data_tmp"
        tmp.symlink_to(stamp)
        tmp.rename(self.root / "..data")


@dataclasses.dataclass(frozen=True)
class Mount:
    """One volume of the sidecar: where it is mounted, and the ConfigMap or Secret it shows."""

    path: str
    kind: str  # "configmap" or "secret"
    name: str


@dataclasses.dataclass(frozen=True)
class Plan:
    """What the gateway's pods run as their sidecar, read from the live Deployment."""

    command: list[str]
    mounts: list[Mount]


def _kubectl_json(kubeconfig: Path, namespace: str, *ref: str) -> dict[str, Any] | None:
    proc = cluster.run_kubectl(kubeconfig, "-n", namespace, "get", *ref, "-o", "json", check=False)
    if proc.returncode != 0:
        if "NotFound" in proc.stderr:
            return None
        raise SidecarError(f"kubectl get {' '.join(ref)} failed: {proc.stderr.strip()}")
    found: dict[str, Any] = json.loads(proc.stdout)
    return found


def plan(deployment: dict[str, Any]) -> Plan:
    """The sidecar container's command and its ConfigMap and Secret mounts."""
    pod = deployment["spec"]["template"]["spec"]
    containers = [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]
    container = next((c for c in containers if c.get("name") == SIDECAR_CONTAINER), None)
    if container is None:
        raise SidecarError(f"the Deployment has no container named {SIDECAR_CONTAINER}")
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    mounts = []
    for m in container.get("volumeMounts") or []:
        volume = volumes.get(m["name"], {})
        if "configMap" in volume:
            mounts.append(Mount(m["mountPath"], "configmap", volume["configMap"]["name"]))
        elif "secret" in volume:
            mounts.append(Mount(m["mountPath"], "secret", volume["secret"]["secretName"]))
    return Plan([*(container.get("command") or []), *(container.get("args") or [])], mounts)


def read_plan(kubeconfig: Path, namespace: str, gateway: str, pod: str | None = None) -> Plan:
    """From the gateway's Deployment, or (injection mode) from a pod the webhook injected."""
    if pod is not None:
        found = _kubectl_json(kubeconfig, namespace, "pod", pod)
        if found is None:
            raise SidecarError(f"pod {namespace}/{pod} does not exist")
        return plan({"spec": {"template": found}})
    deployment = _kubectl_json(kubeconfig, namespace, "deployment", gateway)
    if deployment is None:
        raise SidecarError(
            f"gateway {namespace}/{gateway} has no Deployment yet: is the operator running, and is "
            f"the gateway's PoliciesResolved condition True? (kubectl -n {namespace} get llmgw {gateway})"
        )
    return plan(deployment)


def volume_files(kubeconfig: Path, namespace: str, mount: Mount) -> dict[str, bytes]:
    """The files kubelet would put in the volume: one per data key."""
    found = _kubectl_json(kubeconfig, namespace, mount.kind, mount.name)
    if found is None:
        raise SidecarError(f"{mount.kind} {namespace}/{mount.name} (mounted at {mount.path}) does not exist")
    if mount.kind == "secret":
        return {k: base64.b64decode(v) for k, v in (found.get("data") or {}).items()}
    return {k: v.encode() for k, v in (found.get("data") or {}).items()}


def rendered(kubeconfig: Path, namespace: str, gateway: str) -> tuple[dict[str, bytes], dict[str, bytes]]:
    """The config and key files of the gateway's sidecar, as kubelet would write them."""
    mounts = read_plan(kubeconfig, namespace, gateway).mounts
    config = next(m for m in mounts if m.kind == "configmap")
    keys = next(m for m in mounts if m.kind == "secret")
    return volume_files(kubeconfig, namespace, config), volume_files(kubeconfig, namespace, keys)


def proxy_binary() -> str:
    return shutil.which("llmgw-proxy", path=str(Path(sys.executable).parent)) or "llmgw-proxy"


def command(mounts: dict[str, Path], argv: list[str], work: Path) -> list[str]:
    """``argv`` run with each volume folder bind-mounted at its path, in a private mount namespace.

    The top folder of each mount path (``/etc`` for ``/etc/llmgw/config``) is
    covered by an overlay first, so the mount points can be made without
    touching the host's own folder. Without root, a user namespace maps this
    user to root inside (Linux 5.11 or later mounts overlays there).
    """
    lines = []
    for i, top in enumerate(sorted({"/" + Path(p).parts[1] for p in mounts})):
        upper, scratch = work / f"overlay-{i}-upper", work / f"overlay-{i}-work"
        upper.mkdir(parents=True, exist_ok=True)
        scratch.mkdir(parents=True, exist_ok=True)
        options = f"lowerdir={top},upperdir={upper},workdir={scratch}"
        lines.append(f"mount -t overlay overlay -o {shlex.quote(options)} {shlex.quote(top)}")
    for path, source in mounts.items():
        lines.append(f"mkdir -p {shlex.quote(path)}")
        lines.append(f"mount --bind {shlex.quote(str(source))} {shlex.quote(path)}")
    lines.append("exec " + shlex.join(argv))
    unshare = ["unshare", "--mount"]
    if os.geteuid() != 0:
        unshare[1:1] = ["--user", "--map-root-user"]
    return [*unshare, "sh", "-c", " && ".join(lines)]


def _proxy_argv(plan_command: list[str], port: int | None, admin_port: int | None) -> list[str]:
    # The pod's command names the image's llmgw-proxy; here it is this environment's.
    argv = [proxy_binary(), *plan_command[1:]]
    if port is not None:
        argv += ["--port", str(port)]
    if admin_port is not None:
        argv += ["--admin-port", str(admin_port)]
    return argv


def listening(log: Path) -> dict[str, str] | None:
    """The sidecar's bound addresses, once it has logged its ``listening`` line."""
    with contextlib.suppress(FileNotFoundError):
        for line in log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict) and record.get("msg") == "listening":
                    return {"api": str(record["api"]), "admin": str(record["admin"])}
    return None


def readyz(admin: str) -> tuple[int, str]:
    host, port = admin.rsplit(":", 1)
    if host in ("0.0.0.0", "::"):  # the wildcard it bound: call it on loopback
        host = "127.0.0.1"
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/readyz", timeout=2) as r:
            return int(r.status), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError:
        return 0, ""


@dataclasses.dataclass
class Running:
    proc: subprocess.Popen[bytes]
    volumes: dict[Mount, Kubelet]
    seen: dict[Mount, dict[str, bytes]]
    """What each volume holds now, to write only what changed."""
    log: Path


@contextlib.contextmanager
def running(
    kubeconfig: Path,
    namespace: str,
    gateway: str,
    work: Path,
    *,
    port: int | None,
    admin_port: int | None,
    pod: str | None = None,
) -> Iterator[Running]:
    """The sidecar started on the gateway's rendered volumes; its process group stopped on exit.
    ``pod``: the sidecar the webhook injected into that pod, instead of the gateway's Deployment's."""
    the_plan = read_plan(kubeconfig, namespace, gateway, pod)
    volumes: dict[Mount, Kubelet] = {}
    seen: dict[Mount, dict[str, bytes]] = {}
    for i, mount in enumerate(the_plan.mounts):
        volume = Kubelet(work / "volumes" / f"{i}-{mount.kind}-{mount.name}")
        seen[mount] = volume_files(kubeconfig, namespace, mount)
        volume.write(seen[mount])
        volumes[mount] = volume
    argv = command(
        {m.path: v.root for m, v in volumes.items()}, _proxy_argv(the_plan.command, port, admin_port), work
    )
    log = work / "sidecar.log"
    with processes.running(argv, log) as proc:
        yield Running(proc, volumes, seen, log)


def sync(kubeconfig: Path, namespace: str, sidecar: Running) -> list[str]:
    """Copy changed ConfigMaps and Secrets into their volumes; the names of those that changed.

    One that cannot be read (deleted, or the API briefly away) keeps its last
    content, as kubelet keeps a volume whose source is gone.
    """
    changed = []
    for mount, volume in sidecar.volumes.items():
        with contextlib.suppress(SidecarError):
            files = volume_files(kubeconfig, namespace, mount)
            if files != sidecar.seen.get(mount):
                volume.write(files)
                sidecar.seen[mount] = files
                changed.append(f"{mount.kind}/{mount.name}")
    return changed


def _wait(
    what: str, probe: Callable[[], T | None], proc: subprocess.Popen[bytes], log: Path, timeout: float
) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        if proc.poll() is not None:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            raise SidecarError(f"the sidecar exited ({proc.returncode}) before {what}:\n{tail}")
        time.sleep(0.1)  # polling a child's log file and port: nothing to await
    raise SidecarError(f"timed out after {timeout:.0f}s waiting for {what}")


def _ready_answer(admin: str) -> tuple[int, str] | None:
    answer = readyz(admin)
    return answer if answer[0] else None


def main(
    gateway_ref: str, kubeconfig: Path, *, port: int | None, admin_port: int | None, sync_period: float
) -> int:
    namespace, sep, gateway = gateway_ref.partition("/")
    if not sep or not namespace or not gateway:
        raise SidecarError(f"--gateway wants NAMESPACE/NAME, got {gateway_ref!r}")
    processes.stop_on_term()  # leaving `running` stops the sidecar's process group
    work = Path(tempfile.mkdtemp(prefix=f"llmgw-sidecar-{namespace}-{gateway}-"))
    try:
        with running(kubeconfig, namespace, gateway, work, port=port, admin_port=admin_port) as sidecar:
            for mount in sidecar.volumes:
                print(f"# {mount.kind} {mount.name} mounted at {mount.path}", file=sys.stderr)
            proc, log = sidecar.proc, sidecar.log
            bound = _wait("its listening line", lambda: listening(log), proc, log, READY_TIMEOUT)
            ready = functools.partial(_ready_answer, bound["admin"])
            status, body = _wait("a /readyz answer", ready, proc, log, READY_TIMEOUT)
            print(f"http://{bound['api']}/v1", flush=True)
            print(
                f"# the sidecar of {namespace}/{gateway}: admin http://{bound['admin']}, /readyz {status} "
                f"{body.strip()}; its log is {log}; Ctrl-C stops it",
                file=sys.stderr,
                flush=True,
            )
            while proc.poll() is None:
                time.sleep(sync_period)  # kubelet's sync loop is a period too; see SYNC_PERIOD
                for name in sync(kubeconfig, namespace, sidecar):
                    print(f"# {name} changed: written to its volume; the sidecar reloads it", file=sys.stderr)
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            raise SidecarError(f"the sidecar exited ({proc.returncode}):\n{tail}")
    except KeyboardInterrupt:
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)

"""`llmgw-dev`: the developer's entry point (cluster, env, sidecar, binaries, generate, demo)."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

from llmgw_dev import binaries, cluster, sidecar

DEFAULT_CLUSTER = os.environ.get("LLMGW_CLUSTER", "llmgw")
"""The cluster a command means when it is given no --name (`make cluster-up` starts this one)."""


def _cluster_up(args: argparse.Namespace) -> int:
    started = time.monotonic()
    c = cluster.up(name=args.name, nodes=args.nodes)
    print(
        f"# cluster {c.name} up in {time.monotonic() - started:.1f}s; stop it with: "
        f"llmgw-dev cluster down --name {c.name}",
        file=sys.stderr,
    )
    print(c.kubeconfig)
    return 0


def _cluster_down(args: argparse.Namespace) -> int:
    c = cluster.Cluster.load(args.name)
    stopped = cluster.down(c)
    print(f"stopped {', '.join(stopped) or 'nothing (already stopped)'}; removed {c.data_dir}")
    return 0


def _cluster_status(args: argparse.Namespace) -> int:
    c = cluster.Cluster.load(args.name)
    alive = c.alive()
    try:
        code, _ = c.get("/readyz")
        ready = code == 200
    except OSError:
        ready = False
    print(
        json.dumps(
            {
                "name": c.name,
                "kubeconfig": str(c.kubeconfig),
                "server": c.server,
                "apiserverReady": ready,
                "processes": alive,
            },
            indent=2,
        )
    )
    return 0 if ready and all(alive.values()) else 1


def _env(args: argparse.Namespace) -> int:
    """Shell lines that put kubectl, helm and this venv's commands on PATH and name the cluster."""
    dirs = [str(Path(sys.executable).parent)]
    for tool in ("kubectl", "helm"):
        found = binaries.find(tool)
        if found is None:
            print(f"# {tool} is not built yet: run `make binaries` (or `make cluster-up`)", file=sys.stderr)
        elif str(found.parent) not in dirs:
            dirs.append(str(found.parent))
    print(f'export PATH={shlex.quote(":".join(dirs))}:"$PATH"')
    try:
        c = cluster.Cluster.load(args.name)
    except cluster.ClusterError:
        print(f"# no cluster named {args.name} is up: `make cluster-up` starts one", file=sys.stderr)
        return 0
    print(f"export KUBECONFIG={shlex.quote(str(c.kubeconfig))}")
    return 0


def _sidecar(args: argparse.Namespace) -> int:
    kubeconfig = args.kubeconfig or os.environ.get("KUBECONFIG")
    if not kubeconfig:
        print("llmgw-dev sidecar: set KUBECONFIG or pass --kubeconfig", file=sys.stderr)
        return 2
    try:
        return sidecar.main(
            args.gateway,
            Path(kubeconfig),
            port=args.port,
            admin_port=args.admin_port,
            sync_period=args.sync_period,
        )
    except sidecar.SidecarError as e:
        print(f"llmgw-dev sidecar: {e}", file=sys.stderr)
        return 1


def _binaries_build(args: argparse.Namespace) -> int:
    for name, path in binaries.ensure_all(args.tools or None).items():
        print(f"{name}\t{path}")
    return 0


def _generate(args: argparse.Namespace) -> int:
    from llmgw_dev import generate

    code: int = generate.main(["--check"] if args.check else [])
    return code


def _demo(args: argparse.Namespace) -> int:
    from llmgw_dev import demo

    code: int = demo.main()
    return code


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmgw-dev", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    cl = sub.add_parser("cluster", help="a local control plane on loopback").add_subparsers(
        dest="action", required=True
    )
    name_help = "the cluster's name (default: $LLMGW_CLUSTER, else llmgw; now %(default)s)"
    up = cl.add_parser(
        "up",
        help="start one; prints the kubeconfig path",
        description="Start etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok on "
        "loopback ports (about 20 s; the first run builds the binaries, see `binaries build`). Prints "
        "the kubeconfig path. kwok fakes the nodes: pods are scheduled and reported running, but no "
        "container runs.",
    )
    up.add_argument("--name", default=DEFAULT_CLUSTER, help=name_help)
    up.add_argument(
        "--nodes", type=int, default=cluster.FAKE_NODES, help="fake nodes to create (default: %(default)s)"
    )
    up.set_defaults(func=_cluster_up)
    down = cl.add_parser(
        "down",
        help="stop one and remove its data",
        description="Stop exactly the processes `up` started for this cluster (by pid and start time), "
        "then delete its data folder and kubeconfig.",
    )
    down.add_argument("--name", default=DEFAULT_CLUSTER, help=name_help)
    down.set_defaults(func=_cluster_down)
    status = cl.add_parser(
        "status",
        help="print its state as JSON; exit 0 when it is up",
        description="Print the cluster's kubeconfig, API server URL, whether the API server answers "
        "/readyz and which of its processes are alive. Exit 0 when every process is alive and the API "
        "server ready, 1 otherwise.",
    )
    status.add_argument("--name", default=DEFAULT_CLUSTER, help=name_help)
    status.set_defaults(func=_cluster_status)

    env = sub.add_parser(
        "env",
        help="shell exports: kubectl, helm and llmgw-* on PATH, KUBECONFIG of a local cluster",
        description="Print `export` lines for a shell: PATH gains this virtualenv's bin folder and the "
        "folders of the pinned kubectl and helm in the binaries cache; KUBECONFIG names the kubeconfig "
        'of the local cluster --name, when it is up. Use: eval "$(.venv/bin/llmgw-dev env)"',
    )
    env.add_argument("--name", default=DEFAULT_CLUSTER, help=name_help)
    env.set_defaults(func=_env)

    sc = sub.add_parser(
        "sidecar",
        help="run the real sidecar here on what the operator rendered for a gateway",
        description="Run llmgw-proxy on this machine with the ConfigMap and Secret the operator rendered "
        "for a gateway, mounted where the gateway's Deployment mounts them (as kubelet would, in a "
        "private mount namespace). Prints the URL to call on stdout once the sidecar listens, then "
        "copies changes of the ConfigMap and Secret into its volumes every --sync-period seconds "
        "until Ctrl-C. For the local control plane, whose kwok nodes run no containers.",
    )
    sc.add_argument("--gateway", required=True, metavar="NAMESPACE/NAME", help="the LLMGateway")
    sc.add_argument("--kubeconfig", help="default: $KUBECONFIG")
    sc.add_argument("--port", type=int, help="API port, 0 for any (default: the gateway's, 8080 unless set)")
    sc.add_argument("--admin-port", type=int, help="admin port, 0 for any (default: the gateway's, 9090)")
    sc.add_argument(
        "--sync-period",
        type=float,
        default=sidecar.SYNC_PERIOD,
        metavar="S",
        help="seconds between copies of the ConfigMap and Secret into the volumes (default: %(default)s)",
    )
    sc.set_defaults(func=_sidecar)

    bn = sub.add_parser("binaries", help="find or build the pinned external binaries").add_subparsers(
        dest="action", required=True
    )
    b = bn.add_parser(
        "build",
        help="build what is missing",
        description="Find each pinned binary (KUBEBUILDER_ASSETS, PATH at the pinned version, the cache) "
        "or build it from its Go module into the cache. Prints a plan first; a first build of all of "
        "them takes about fifteen minutes on two cores.",
    )
    b.add_argument("tools", nargs="*", help=f"subset of {', '.join(binaries.tools())}")
    b.set_defaults(func=_binaries_build)

    g = sub.add_parser("generate", help="write CRDs, schemas, reference docs and version lines")
    g.add_argument("--check", action="store_true", help="fail if a generated file is stale")
    g.set_defaults(func=_generate)

    d = sub.add_parser("demo", help="the end-to-end demo")
    d.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except (cluster.ClusterError, binaries.BuildError) as e:
        print(f"llmgw-dev: {e}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())

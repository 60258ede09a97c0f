"""`llmgw-dev`: the developer's entry point (cluster, binaries, generate, demo)."""

from __future__ import annotations

import argparse
import json
import sys
import time

from llmgw_dev import binaries, cluster


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
    up = cl.add_parser("up", help="start one; prints the kubeconfig path")
    up.add_argument("--name", default="llmgw")
    up.add_argument("--nodes", type=int, default=cluster.FAKE_NODES)
    up.set_defaults(func=_cluster_up)
    for action, func in (("down", _cluster_down), ("status", _cluster_status)):
        p = cl.add_parser(action)
        p.add_argument("--name", default="llmgw")
        p.set_defaults(func=func)

    bn = sub.add_parser("binaries", help="find or build the pinned external binaries").add_subparsers(
        dest="action", required=True
    )
    b = bn.add_parser("build")
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

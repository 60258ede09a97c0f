"""`llmgw-operator`: run the operator (kopf) against the cluster of the current kubeconfig."""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import ctypes
import datetime
import hashlib
import logging
import os
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Coroutine
from typing import Any

import kopf

import llmgw_operator
from llmgw_operator import certs, kopf_fixes, kube, poll, webhook
from llmgw_operator.render import pod_rules

PRIORITY_RANGE = 1_000_000
# kopf's default lifetime is 60 s: a standby waited up to a minute after the active replica died.
PEERING_LIFETIME = 10
# kopf's default, 70 s, sits above the API server's bookmark interval (about 60 s): an idle but
# healthy watch is never reopened, a silent one is within this.
WATCH_INACTIVITY = 70.0


def peering_priority(args: argparse.Namespace) -> int:
    """kopf freezes every peer whose priority ties with another, so replicas need distinct ones.

    Replicas of one Deployment share their arguments; with
    LLMGW_PEERING_PRIORITY_FROM_POD_NAME set, each derives its own priority
    from its pod name (POD_ID), which is unique in the namespace.
    """
    if args.priority is not None:
        return int(args.priority)
    pod = os.environ.get("POD_ID")
    if os.environ.get("LLMGW_PEERING_PRIORITY_FROM_POD_NAME") == "true" and pod:
        return int.from_bytes(hashlib.sha256(pod.encode()).digest()[:4], "big") % PRIORITY_RANGE + 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmgw-operator",
        description="Reconcile LLMGateway and ProviderPolicy objects into Deployments that run the sidecar.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {llmgw_operator.__version__}")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (default)")
    scope.add_argument(
        "-n", "--namespace", action="append", default=[], help="watch this namespace (repeatable)"
    )
    parser.add_argument(
        "--liveness", metavar="URL", help="serve kopf's liveness probe, e.g. http://0.0.0.0:8080/healthz"
    )
    peering = parser.add_mutually_exclusive_group()
    peering.add_argument(
        "--peering", metavar="NAME", help="kopf peering object name: one active replica, others stand by"
    )
    peering.add_argument(
        "--standalone", action="store_true", help="no peering (a single replica; the default)"
    )
    parser.add_argument(
        "--priority", type=int, help="peering priority (default: derived from POD_ID if asked, else 0)"
    )
    parser.add_argument(
        "--peering-lifetime",
        metavar="SECONDS",
        type=int,
        choices=range(2, 3601),
        default=PEERING_LIFETIME,
        help="a replica silent this long counts as gone and a standby takes over; each renews its "
        f"record 5-10 s sooner (2-3600, default {PEERING_LIFETIME})",
    )
    parser.add_argument(
        "--watch-inactivity",
        metavar="SECONDS",
        type=_positive(3600),
        default=WATCH_INACTIVITY,
        help="a watch that delivered nothing (not even a bookmark) this long is taken for dead and "
        f"opened again (default {WATCH_INACTIVITY:g})",
    )
    pods = parser.add_argument_group(
        "gateway pod templates",
        "What an LLMGateway's pod template may ask for (hostNetwork is always refused).",
    )
    pods.add_argument(
        "--allowed-service-account",
        metavar="NAME",
        action="append",
        default=[],
        help="a ServiceAccount gateway pods may run as (repeatable; none given: any)",
    )
    pods.add_argument(
        "--allow-privileged",
        action="store_true",
        help="allow privileged containers, allowPrivilegeEscalation, hostProcess and any capability",
    )
    pods.add_argument("--allow-host-namespaces", action="store_true", help="allow hostPID and hostIPC")
    pods.add_argument("--allow-host-path", action="store_true", help="allow hostPath volumes")
    parser.add_argument(
        "--metrics-port",
        metavar="PORT",
        type=int,
        choices=range(0, 65536),
        default=8080,
        help="serve /metrics (Prometheus) and /readyz on this port, all interfaces (0: none; default 8080)",
    )
    plane = parser.add_argument_group(
        "data plane", "How the gateways' sidecars are asked for their GET /status reports."
    )
    plane.add_argument(
        "--data-plane-period",
        metavar="SECONDS",
        type=_positive(3600),
        default=15.0,
        help="poll every gateway's ready pods this often (default 15)",
    )
    plane.add_argument(
        "--data-plane-timeout",
        metavar="SECONDS",
        type=_positive(60),
        default=2.0,
        help="a pod that has not answered in this time is unreporting (default 2)",
    )
    plane.add_argument(
        "--data-plane-concurrency",
        metavar="N",
        type=int,
        choices=range(1, 1025),
        default=64,
        help="requests in flight at once, across all gateways (1-1024, default 64)",
    )
    plane.add_argument(
        "--data-plane-page-size",
        metavar="N",
        type=int,
        choices=range(1, 5001),
        default=kube.LIST_PAGE,
        help=f"pods per page of a round's LIST, one per namespace (1-5000, default {kube.LIST_PAGE})",
    )
    plane.add_argument(
        "--data-plane-rate",
        metavar="PER_SECOND",
        type=_positive(10000),
        default=poll.Settings.rate,
        help="status requests per second a full round may average: with more ready pods than "
        f"period x rate, rounds come less often than the period (default {poll.Settings.rate:g})",
    )
    add_webhook_arguments(parser)
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("--verbose", action="store_true")
    verbosity.add_argument("--debug", action="store_true")
    verbosity.add_argument("--quiet", action="store_true")
    return parser


def _positive(most: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = float(text)
        if not 0 < value <= most:
            raise argparse.ArgumentTypeError(f"must be more than 0 and at most {most:g}")
        return value

    return parse


DAY = 86400.0


def add_webhook_arguments(parser: argparse.ArgumentParser) -> None:
    hook = parser.add_argument_group(
        "admission webhook",
        "Injection mode: a mutating webhook adds the sidecar to pods labelled llmgateway.io/gateway=<name>.",
    )
    hook.add_argument(
        "--webhook-port",
        metavar="PORT",
        type=int,
        choices=range(0, 65536),
        default=0,
        help="serve the webhook over HTTPS on this port (0: no webhook; the default; the chart sets 9443)",
    )
    hook.add_argument("--webhook-address", metavar="ADDR", default="0.0.0.0", help="listen address")
    hook.add_argument(
        "--webhook-secret",
        metavar="[NAMESPACE/]NAME",
        default="llmgw-webhook-tls",
        help="the Secret holding the webhook's certificates (namespace: LLMGW_POD_NAMESPACE, else default)",
    )
    hook.add_argument(
        "--webhook-configuration",
        metavar="NAME",
        help="the MutatingWebhookConfiguration whose caBundle the operator keeps (self-managed certificates)",
    )
    hook.add_argument(
        "--webhook-host",
        metavar="NAME",
        action="append",
        default=[],
        help="a DNS name or IP address the serving certificate names (repeatable; e.g. the Service's "
        "<name>.<namespace>.svc)",
    )
    hook.add_argument(
        "--webhook-certs",
        choices=("self-managed", "external"),
        default="self-managed",
        help="self-managed: the operator creates and renews them (default); external: cert-manager does",
    )
    hook.add_argument(
        "--webhook-failure-policy",
        choices=("Fail", "Ignore"),
        default="Fail",
        help="the configuration's failurePolicy: with Ignore, a pod naming a missing gateway is admitted "
        "without the sidecar (with a warning) instead of refused (default Fail)",
    )
    hook.add_argument(
        "--webhook-cert-validity",
        metavar="SECONDS",
        type=_positive(3650 * DAY),
        default=90 * DAY,
        help="serving certificate lifetime, renewed when a third is left (default 90 days)",
    )
    hook.add_argument(
        "--webhook-ca-validity",
        metavar="SECONDS",
        type=_positive(36500 * DAY),
        default=3650 * DAY,
        help="CA lifetime, renewed when a third is left, in two steps (default 3650 days)",
    )
    hook.add_argument(
        "--webhook-cert-check",
        metavar="SECONDS",
        type=_positive(DAY),
        default=60.0,
        help="how often each replica reads the Secret and renews what is due (default 60)",
    )


def webhook_of(args: argparse.Namespace) -> webhook.Settings:
    namespace, _, name = str(args.webhook_secret).rpartition("/")
    hosts = tuple(args.webhook_host) or ("localhost",)
    return webhook.Settings(
        port=args.webhook_port,
        addr=args.webhook_address,
        namespace=namespace or os.environ.get("LLMGW_POD_NAMESPACE") or "default",
        secret=name,
        configuration=args.webhook_configuration,
        hosts=hosts,
        managed=args.webhook_certs == "self-managed",
        fail_closed=args.webhook_failure_policy == "Fail",
        lifetimes=certs.Lifetimes(
            ca=datetime.timedelta(seconds=args.webhook_ca_validity),
            serving=datetime.timedelta(seconds=args.webhook_cert_validity),
        ),
        period=args.webhook_cert_check,
    )


def rules_of(args: argparse.Namespace) -> pod_rules.Rules:
    return pod_rules.Rules(
        service_accounts=frozenset(args.allowed_service_account),
        privileged=args.allow_privileged,
        host_namespaces=args.allow_host_namespaces,
        host_path=args.allow_host_path,
    )


def polling_of(args: argparse.Namespace) -> poll.Settings:
    return poll.Settings(
        period=args.data_plane_period,
        timeout=args.data_plane_timeout,
        concurrency=args.data_plane_concurrency,
        page_size=args.data_plane_page_size,
        rate=args.data_plane_rate,
    )


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.liveness and args.metrics_port and urllib.parse.urlsplit(args.liveness).port == args.metrics_port:
        parser.error(
            f"--liveness and --metrics-port both name port {args.metrics_port}: give one another port"
        )
    tune_malloc()
    kopf.configure(debug=args.debug, verbose=args.verbose, quiet=args.quiet)
    from llmgw_operator import handlers  # registers the handlers with kopf's default registry

    settings = webhook_of(args)
    if settings.port:
        handlers.register_webhook()
    del handlers
    kopf_fixes.apply()
    try:
        stuck = run(
            kopf.operator(
                clusterwide=not args.namespace,
                namespaces=args.namespace,
                liveness_endpoint=args.liveness,
                # Any peering name, even with standalone, makes kopf wait for peering CRDs.
                standalone=not args.peering,
                **({"peering_name": args.peering} if args.peering else {}),
                priority=peering_priority(args),
                memories=kopf_fixes.LeanMemories(),
                memo=kopf.Memo(
                    pod_rules=rules_of(args),
                    polling=polling_of(args),
                    metrics_port=args.metrics_port,
                    peering_lifetime=args.peering_lifetime,
                    watch_inactivity=args.watch_inactivity,
                    namespaces=tuple(args.namespace),
                    webhook=settings,
                    verbose=args.verbose or args.debug,
                ),
            )
        )
    except KeyboardInterrupt:
        return 0
    if stuck:
        # Only a worker thread blocked in a call is left: end without joining it.
        logging.getLogger(__name__).warning(
            "stopped; not waiting for %d worker thread(s) still blocked", len(stuck)
        )
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


MALLOC_ARENAS = 2
"""glibc malloc arenas (``M_ARENA_MAX``); glibc's default is 8 per core, so the API threads made
16 on two cores, each holding on to what the large response bodies decoded in it left free."""
MMAP_THRESHOLD = 128 * 1024
"""Allocations from this size up get pages of their own, handed back when freed (``M_MMAP_THRESHOLD``,
glibc's default start; fixed, it no longer rises after the first large one is freed, which let
later LIST pages and response bodies grow the heaps instead)."""
_M_ARENA_MAX, _M_MMAP_THRESHOLD = -8, -3  # glibc's mallopt parameters (malloc.h)


def tune_malloc() -> bool:
    """Bound glibc's malloc before any thread starts; True when applied (glibc only).

    The environment wins: MALLOC_ARENA_MAX or MALLOC_MMAP_THRESHOLD_ set leaves that one as glibc
    read it."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False  # not glibc (musl has no mallopt): nothing to tune
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    applied = True
    if "MALLOC_ARENA_MAX" not in os.environ:
        applied = mallopt(_M_ARENA_MAX, MALLOC_ARENAS) == 1 and applied
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ:
        applied = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and applied
    return applied


WORKER_THREADS = 4
"""Threads of the event loop's default pool: logins (files, a kubeconfig's exec plugin), DNS lookups,
making certificates. API requests do not use them: ``kube.Client`` sends them on the loop."""

EXIT_GRACE = 2.0
"""Seconds a stopped operator waits for calls still running in worker threads."""


def run(main: Coroutine[Any, Any, None], grace: float = EXIT_GRACE) -> list[threading.Thread]:
    """``asyncio.run(main)``, except that worker threads are waited for only ``grace`` seconds;
    returns those still running then.

    A worker thread can block for long: a login's exec plugin, a DNS lookup of an unreachable
    resolver. ``asyncio.run`` waits for the default executor, and interpreter exit joins its
    threads, so SIGTERM would not be honoured for that long and the kubelet's SIGKILL would end
    the process. (Until the API requests moved onto the loop, they ran in these threads, and one
    blocked on a connection gone silent did exactly that.)
    kopf has stopped by then (its cleanup ran, its peering record is gone): nothing is left to do.
    """
    loop = asyncio.new_event_loop()
    executor = concurrent.futures.ThreadPoolExecutor(WORKER_THREADS, thread_name_prefix="llmgw-worker")
    loop.set_default_executor(executor)
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(main)
    finally:
        try:
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
            asyncio.set_event_loop(None)
            loop.close()
    deadline = time.monotonic() + grace
    workers = [t for t in threading.enumerate() if t.name.startswith("llmgw-worker")]
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))
    return [t for t in workers if t.is_alive()]


if __name__ == "__main__":
    sys.exit(main())

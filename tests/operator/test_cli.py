"""The operator's flags for gateway pod templates become the rules the reconciler checks."""

from __future__ import annotations

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

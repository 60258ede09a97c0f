"""The operator's flags for gateway pod templates become the rules the reconciler checks."""

from __future__ import annotations

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
    argv = ["--data-plane-period=0.5", "--data-plane-timeout=0.25", "--data-plane-concurrency=8"]
    assert cli.polling_of(cli.build_parser().parse_args(argv)) == poll.Settings(0.5, 0.25, 8)


def test_a_data_plane_period_out_of_bounds_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--data-plane-period=0"], ["--data-plane-timeout=61"], ["--data-plane-concurrency=0"]):
        with pytest.raises(SystemExit):
            cli.build_parser().parse_args(argv)
    assert "must be more than 0" in capsys.readouterr().err

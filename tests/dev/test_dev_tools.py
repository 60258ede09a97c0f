"""What the developer tools tell a newcomer before anything runs: help, plans, shell exports."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from llmgw_dev import binaries, cli, fake_provider, sidecar
from llmgw_operator.api import gateway
from llmgw_operator.render import deployment, names

ROOT = Path(__file__).resolve().parents[2]


def help_text(*args: str, capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as done:
        cli.main([*args, "--help"])
    assert done.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize(
    ("action", "says"),
    [
        ("down", "Stop exactly the processes `up` started"),
        ("status", "Exit 0 when every process is alive and the API server ready"),
        ("up", "kwok fakes the nodes"),
    ],
)
def test_each_cluster_action_explains_itself(
    action: str, says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    text = " ".join(help_text("cluster", action, capsys=capsys).split())
    assert says in text
    assert "--name NAME the cluster's name" in text


def test_the_fake_providers_help_shows_its_default_port_and_control_api(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        fake_provider.parser().parse_args(["--help"])
    text = capsys.readouterr().out
    assert "(default: 8000" in text
    for endpoint in ("POST   /_control", "GET    /_control/requests", "DELETE /_control"):
        assert endpoint in text
    assert "retryAfter" in text


def test_a_binaries_build_says_what_it_will_build_and_how_long_first() -> None:
    every = list(binaries.tools().values())
    lines = binaries.plan(every)
    total = sum(binaries.ROUGH_MINUTES[t.name] for t in every)
    assert f"roughly {total} minutes" in lines[0]
    assert len(lines) == 1 + len(every)
    assert "kube-apiserver" in next(line for line in lines if "kubernetes" in line)
    assert binaries.plan([]) == []


def test_env_prints_path_exports_and_says_what_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMGW_CACHE", str(tmp_path))  # an empty cache: nothing built, no cluster
    assert cli.main(["env", "--name", "nobody"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith(f"export PATH={Path(sys.executable).parent}")
    assert "KUBECONFIG" not in out
    assert "no cluster named nobody is up" in err


def test_make_says_what_its_first_run_does_and_shows_pip(tmp_path: Path) -> None:
    proc = subprocess.run(
        ["make", "-n", f"VENV={tmp_path / 'venv'}", "unit"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "about a minute" in proc.stdout
    install = next(line for line in proc.stdout.splitlines() if "pip install" in line and "-e" in line)
    assert "--quiet" not in install


@pytest.mark.parametrize(
    ("target", "command"), [("cluster-up", "cluster up"), ("cluster-down", "cluster down")]
)
def test_the_cluster_targets_run_the_cluster_command(target: str, command: str) -> None:
    proc = subprocess.run(
        ["make", "-n", target, "CLUSTER=x"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert f"llmgw-dev {command} --name x" in proc.stdout


def test_the_sidecar_tool_runs_what_the_deployment_runs_where_it_mounts() -> None:
    spec = gateway.LLMGatewaySpec.model_validate(
        {
            "template": {"spec": {"containers": [{"name": "app", "image": "app:1"}]}},
            "routes": [{"model": "m", "targets": [{"policy": "p"}]}],
        }
    )
    rendered = deployment.render("chat", "ns", spec, image="proxy:1", native_sidecar=True)
    plan = sidecar.plan(rendered)
    assert plan.command[1:] == ["--config", names.CONFIG_FILE]
    assert set(plan.mounts) == {
        sidecar.Mount(names.CONFIG_DIR, "configmap", names.config_map("chat")),
        sidecar.Mount(names.KEYS_DIR, "secret", names.secret("chat")),
    }


def test_the_sidecar_command_mounts_each_volume_over_an_overlay(tmp_path: Path) -> None:
    argv = sidecar.command(
        {"/etc/llmgw/config": tmp_path / "c", "/etc/llmgw/keys": tmp_path / "k"},
        ["llmgw-proxy", "--x"],
        tmp_path,
    )
    script = argv[-1]
    assert argv[0] == "unshare" and "--mount" in argv
    assert script.count("mount -t overlay") == 1  # one overlay for /etc, shared by both
    assert f"mount --bind {tmp_path / 'c'} /etc/llmgw/config" in script
    assert f"mount --bind {tmp_path / 'k'} /etc/llmgw/keys" in script
    assert script.endswith("exec llmgw-proxy --x")


def test_a_term_signal_runs_the_cleanup_of_a_tool_that_stops_on_term(tmp_path: Path) -> None:
    # bench_operator and the sidecar tool take their cluster down and their processes with them in
    # `finally` blocks; a plain SIGTERM would end them without running those.
    marker = tmp_path / "cleaned"
    code = (
        "import pathlib, sys\n"
        "from llmgw_dev import processes\n"
        "processes.stop_on_term()\n"
        "try:\n"
        "    print('ready', flush=True)\n"
        "    sys.stdin.read()\n"
        "finally:\n"
        f"    pathlib.Path({str(marker)!r}).write_text('cleaned up')\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)

    assert marker.read_text() == "cleaned up"
    assert b"KeyboardInterrupt: signal 15" in err

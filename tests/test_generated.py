"""Generated artefacts are committed; this fails, naming the files, when one is out of date."""

from __future__ import annotations

import pathlib

import pytest

from llmgw_dev import generate


def test_generated_files_match_the_models() -> None:
    stale = generate.stale()
    assert not stale, (
        f"stale generated files: {', '.join(stale)}; run `python -m llmgw_dev.generate` and commit"
    )


def test_names_a_file_edited_by_hand_as_stale(tmp_path: pathlib.Path) -> None:
    generate.write(tmp_path)
    (tmp_path / "crds/llmgateway.io_llmgateways.yaml").write_text("edited by hand\n")

    assert generate.stale(tmp_path) == ["crds/llmgateway.io_llmgateways.yaml"]


def test_the_helm_chart_carries_identical_crds() -> None:
    files = generate.artefacts()
    crds = sorted(p for p in files if p.startswith("crds/"))
    assert crds
    for path in crds:
        assert files[f"helm/llmgw/{path}"] == files[path]


def test_check_mode_exits_non_zero_and_names_the_stale_file(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert generate.main(["--root", str(tmp_path)]) == 0
    assert generate.main(["--check", "--root", str(tmp_path)]) == 0
    (tmp_path / "docs/reference/crds.md").unlink()

    assert generate.main(["--check", "--root", str(tmp_path)]) == 1
    assert "docs/reference/crds.md" in capsys.readouterr().err


# -- the version lines --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rel", "before", "after"),
    [
        pytest.param(
            "helm/llmgw/Chart.yaml",
            'name: c\nversion: 0.0.1\nappVersion: "0.0.1"\nkubeVersion: ">=1.29.0-0"\n',
            'name: c\nversion: 2.3.4\nappVersion: "2.3.4"\nkubeVersion: ">=1.29.0-0"\n',
            id="chart-version-and-appversion",
        ),
        pytest.param(
            "Dockerfile.proxy",
            "FROM b AS builder\nFROM b\nARG VERSION=0.0.1\nLABEL v=${VERSION}\n",
            "FROM b AS builder\nFROM b\nARG VERSION=2.3.4\nLABEL v=${VERSION}\n",
            id="dockerfile-arg-default",
        ),
    ],
)
def test_writes_the_version_on_its_lines_and_leaves_the_rest(rel: str, before: str, after: str) -> None:
    assert generate.with_version(rel, before, "2.3.4") == after


@pytest.mark.parametrize(
    ("text", "count"),
    [
        pytest.param("FROM b\nLABEL v=1\n", 0, id="line-gone"),
        pytest.param("FROM b AS builder\nARG VERSION=1\nFROM b\nARG VERSION=1\n", 2, id="line-twice"),
    ],
)
def test_a_dockerfile_without_exactly_one_version_line_is_an_error_naming_it(text: str, count: int) -> None:
    with pytest.raises(generate.MissingVersionLine, match=f"Dockerfile.operator: {count} lines start with"):
        generate.with_version("Dockerfile.operator", text, "1.0.0")


def test_a_version_edited_by_hand_is_stale_and_written_back_alone(tmp_path: pathlib.Path) -> None:
    generate.write(tmp_path)
    chart = tmp_path / "helm/llmgw/Chart.yaml"
    committed = (generate.ROOT / "helm/llmgw/Chart.yaml").read_text()
    chart.write_text(committed.replace('appVersion: "', 'appVersion: "9.9.9-hand-'))

    assert generate.stale(tmp_path) == ["helm/llmgw/Chart.yaml"]
    assert generate.write(tmp_path) == ["helm/llmgw/Chart.yaml"]
    assert chart.read_text() == committed


def test_check_mode_reports_a_missing_version_line_without_a_traceback(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "Dockerfile.proxy").write_text("FROM b\n")

    assert generate.main(["--check", "--root", str(tmp_path)]) == 1
    assert "Dockerfile.proxy: 0 lines start with 'ARG VERSION='" in capsys.readouterr().err

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

"""Each image's build and entrypoint steps, replayed outside Docker.

There is no container engine here, so the test walks the stage of each
Dockerfile that builds the venv (the first: the builder of a two-stage file,
the only stage of a one-stage file): it copies what COPY copies into a
scratch WORKDIR, applies ENV and runs every RUN line in a shell, with the
image's venv path mapped to a fresh venv under tmp_path. Then it runs the
final stage's ENTRYPOINT from that venv.
A Dockerfile edit that breaks the install, forgets a source folder or names a
missing console script fails here.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llmgw_dev import dockerfile_check

ROOT = Path(__file__).resolve().parents[2]
IMAGE_VENV = "/opt/venv"
pytestmark = pytest.mark.slow


@dataclasses.dataclass(frozen=True)
class Replayed:
    venv: Path
    entrypoint: list[str]
    env: dict[str, str]

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.entrypoint, *args], capture_output=True, text=True, env=self.env, timeout=60, check=False
        )

    def distributions(self) -> set[str]:
        code = (
            "import importlib.metadata as m; print('\\n'.join(d.metadata['Name'] for d in m.distributions()))"
        )
        out = subprocess.run(
            [str(self.venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True
        )
        return {re.sub(r"[-_.]+", "-", line).lower() for line in out.stdout.split()}

    def import_all(self, package: str) -> subprocess.CompletedProcess[str]:
        """Import every module of a package: a runtime dependency the extra lacks fails here."""
        code = (
            "import importlib, pkgutil, sys\n"
            f"pkg = importlib.import_module({package!r})\n"
            "for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
            "    importlib.import_module(m.name)\n"
        )
        return subprocess.run(
            [str(self.venv / "bin" / "python"), "-c", code],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.venv,  # away from the checkout, so only installed code is found
            timeout=120,
            check=False,
        )

    def importable(self, module: str) -> bool:
        code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
        proc = subprocess.run([str(self.venv / "bin" / "python"), "-c", code], cwd=self.venv, check=False)
        return proc.returncode == 0


def _map(text: str, venv: Path) -> str:
    return text.replace(IMAGE_VENV, str(venv))


def _copy(args: str, workdir: Path) -> None:
    *sources, dest = args.split()
    target = workdir / dest
    for source in sources:
        src = ROOT / source
        if src.is_dir():
            # What .dockerignore keeps out of the context.
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
            shutil.copytree(src, target, ignore=ignore, dirs_exist_ok=True)
        else:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target / src.name)


def replay(dockerfile: Path, tmp_path: Path) -> Replayed:
    stages = dockerfile_check.stages(dockerfile.read_text())
    builder, final = stages[0], stages[-1]
    assert builder is final or any(
        i.args.split() == [f"--from={builder.name}", IMAGE_VENV, IMAGE_VENV] for i in final.find("COPY")
    ), "the final stage must copy the builder's venv to the same path (its scripts' shebangs point there)"
    venv = tmp_path / "venv"
    workdir = tmp_path / "context"
    workdir.mkdir()
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    # `python` in RUN lines is the base image's interpreter; here, the one running the tests.
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "python").symlink_to(sys.executable)
    env["PATH"] = f"{shim}{os.pathsep}{env['PATH']}"
    for ins in builder.instructions:
        if ins.keyword == "WORKDIR":
            continue  # the scratch context folder stands for it
        if ins.keyword == "ENV":  # in a one-stage file, the runtime PATH too
            env.update(_env_pairs(_map(ins.args, venv).replace("$PATH", env["PATH"])))
        elif ins.keyword == "COPY":
            assert not ins.args.startswith("--"), f"unexpected COPY flags in the builder: {ins.args}"
            _copy(ins.args, workdir)
        elif ins.keyword == "RUN":
            command = " ".join(w for w in ins.args.split(" ") if not w.startswith("--mount="))
            proc = subprocess.run(
                ["sh", "-ec", _map(command, venv)],
                cwd=workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=280,
                check=False,
            )
            assert proc.returncode == 0, f"RUN {command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    final_env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    for ins in final.find("ENV"):
        final_env.update(_env_pairs(_map(ins.args, venv).replace("$PATH", os.environ["PATH"])))
    entrypoint = json.loads(final.find("ENTRYPOINT")[-1].args)
    program = shutil.which(entrypoint[0], path=final_env["PATH"])
    assert program is not None, f"{entrypoint[0]} is not on the image's PATH"
    assert Path(program).parent == venv / "bin"
    return Replayed(venv, [program, *entrypoint[1:]], final_env)


def _env_pairs(args: str) -> dict[str, str]:
    return {k: v.strip('"') for k, v in re.findall(r"([\w.]+)=(\"[^\"]*\"|\S+)", args)}


def test_proxy_image_installs_the_sidecar_without_the_kubernetes_stack(tmp_path: Path) -> None:
    image = replay(ROOT / "Dockerfile.proxy", tmp_path)
    installed = image.distributions()
    assert {"llmgw", "aiohttp", "prometheus-client", "uvloop"} <= installed
    assert not installed & {"kopf", "kubernetes"}
    assert not (image.venv / "bin" / "llmgw-operator").exists()
    assert not (image.venv / "bin" / "llmgw-dev").exists()
    assert not image.importable("llmgw_operator") and not image.importable("llmgw_dev")
    imported = image.import_all("llmgw_proxy")
    assert imported.returncode == 0, imported.stderr
    # The sidecar runs under -OO (the image's PYTHONOPTIMIZE, the rendered container's
    # `python -OO`) from bytecode compiled at build: its user cannot write the venv.
    assert image.env["PYTHONOPTIMIZE"] == "2"
    package = next((image.venv / "lib").glob("python3*/site-packages/llmgw_proxy"))
    sources = {p.stem for p in package.rglob("*.py")}
    assert sources and {p.name.split(".")[0] for p in package.rglob("*.opt-2.pyc")} == sources
    result = image.run("--help")
    assert result.returncode == 0, result.stderr
    assert "llmgw-proxy" in result.stdout


def test_operator_image_installs_the_operator_without_the_sidecar_runtime(tmp_path: Path) -> None:
    image = replay(ROOT / "Dockerfile.operator", tmp_path)
    installed = image.distributions()
    # prometheus-client serves the operator's own metrics; the sidecar's loop and tracing stay out.
    assert {"llmgw", "kopf", "orjson", "prometheus-client"} <= installed
    # Not the kubernetes package: kopf would import it (kube.py talks to the API with aiohttp).
    assert "kubernetes" not in installed
    assert not installed & {"uvloop", "opentelemetry-sdk"}
    assert not (image.venv / "bin" / "llmgw-proxy").exists()
    assert not (image.venv / "bin" / "llmgw-dev").exists()
    assert not image.importable("llmgw_dev")
    imported = image.import_all("llmgw_operator")
    assert imported.returncode == 0, imported.stderr
    result = image.run("--help")
    assert result.returncode == 0, result.stderr
    assert "llmgw-operator" in result.stdout

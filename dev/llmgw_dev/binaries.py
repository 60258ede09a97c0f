"""Find or build the external binaries the local control plane needs.

Lookup order, per binary: ``KUBEBUILDER_ASSETS``, then ``PATH`` (only when the
binary reports the pinned version), then the cache outside the repository,
else a build from the Go module proxy with the ordinary ``go`` client.

k8s.io/kubernetes and etcd refuse ``go install`` because their go.mod files
carry ``replace`` directives. We build every tool the same way instead: a small
generated wrapper module requires the tool's module, pins what the replaces
pointed at, and blank-imports the main packages so ``go mod tidy`` resolves
exactly what they need.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

VERSIONS_FILE = Path(__file__).with_name("versions.toml")


def versions() -> dict[str, dict[str, str]]:
    with VERSIONS_FILE.open("rb") as f:
        return tomllib.load(f)


def cache_root() -> Path:
    return Path(os.environ.get("LLMGW_CACHE", Path.home() / ".cache" / "llmgw"))


@dataclasses.dataclass(frozen=True)
class Tool:
    """One Go module that yields one or more binaries."""

    name: str
    module: str
    version: str
    binaries: dict[str, str]  # binary name -> Go main package
    ldflags: tuple[str, ...] = ()
    # Module path -> version, for what the module's own replace directives
    # pointed into its source tree.
    pins: dict[str, str] = dataclasses.field(default_factory=dict)
    version_probe: tuple[str, ...] = ("--version",)

    @property
    def bin_dir(self) -> Path:
        return cache_root() / "bin" / self.name / self.version

    @property
    def build_dir(self) -> Path:
        return cache_root() / "build" / f"{self.name}-{self.version}"


def _kubernetes_ldflags(version: str, commit: str) -> tuple[str, ...]:
    major, minor = version.lstrip("v").split(".")[:2]
    flags = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitCommit={commit}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate=1970-01-01T00:00:00Z",
        ]
    return tuple(flags)


def tools() -> dict[str, Tool]:
    v = versions()
    k8s = v["kubernetes"]["version"]
    staging = v["kubernetes"]["staging"]
    etcd = v["etcd"]["version"]
    helm = v["helm"]["version"]
    helm_major = helm.split(".")[0]
    kwok = v["kwok"]["version"]
    kubeconform = v["kubeconform"]["version"]
    jaeger = v["jaeger"]["version"]
    return {
        "kubernetes": Tool(
            name="kubernetes",
            module="k8s.io/kubernetes",
            version=k8s,
            binaries={
                name: f"k8s.io/kubernetes/cmd/{name}"
                for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
            },
            # The commit is filled in from the module proxy's metadata at build time.
            ldflags=_kubernetes_ldflags(k8s, "unknown"),
            pins={"@staging": staging},
            version_probe=("--version",),
        ),
        "etcd": Tool(
            name="etcd",
            module="go.etcd.io/etcd/server/v3",
            version=etcd,
            binaries={"etcd": "go.etcd.io/etcd/server/v3"},
            pins={
                "go.etcd.io/etcd/api/v3": etcd,
                "go.etcd.io/etcd/client/pkg/v3": etcd,
                "go.etcd.io/etcd/client/v3": etcd,
                "go.etcd.io/etcd/pkg/v3": etcd,
            },
        ),
        "kwok": Tool(
            name="kwok",
            module="sigs.k8s.io/kwok",
            version=kwok,
            binaries={"kwok": "sigs.k8s.io/kwok/cmd/kwok"},
            ldflags=(f"-X sigs.k8s.io/kwok/pkg/consts.Version={kwok}",),
        ),
        "helm": Tool(
            name="helm",
            module=f"helm.sh/helm/{helm_major}",
            version=helm,
            binaries={"helm": f"helm.sh/helm/{helm_major}/cmd/helm"},
            ldflags=(f"-X helm.sh/helm/{helm_major}/internal/version.version={helm}",),
            version_probe=("version", "--short"),
        ),
        "kubeconform": Tool(
            name="kubeconform",
            module="github.com/yannh/kubeconform",
            version=kubeconform,
            binaries={"kubeconform": "github.com/yannh/kubeconform/cmd/kubeconform"},
            version_probe=("-v",),
        ),
        "jaeger": Tool(
            name="jaeger",
            module="github.com/jaegertracing/jaeger",
            version=jaeger,
            binaries={"jaeger": "github.com/jaegertracing/jaeger/cmd/jaeger"},
            ldflags=(f"-X github.com/jaegertracing/jaeger/internal/version.latestVersion={jaeger}",),
            # Jaeger's go.mod replaces sarama with an older release; the wrapper module must too.
            pins={"github.com/Shopify/sarama": "v1.33.0"},
            version_probe=("version",),
        ),
    }


def _tool_for(binary: str) -> Tool:
    for tool in tools().values():
        if binary in tool.binaries:
            return tool
    raise KeyError(f"no pinned tool provides {binary!r}")


def _reports_version(path: Path, tool: Tool) -> bool:
    """True when a found binary is the pinned release (major.minor match)."""
    wanted = ".".join(tool.version.lstrip("v").split(".")[:2])
    probe = tool.version_probe
    if path.name == "kubectl":
        probe = ("version", "--client")
    try:
        out = subprocess.run([str(path), *probe], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return re.search(rf"\bv?{re.escape(wanted)}\.\d", out.stdout + out.stderr) is not None


def find(binary: str) -> Path | None:
    """Return a usable binary without building anything."""
    tool = _tool_for(binary)
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets and (Path(assets) / binary).is_file():
        return Path(assets) / binary
    on_path = shutil.which(binary)
    if on_path and _reports_version(Path(on_path), tool):
        return Path(on_path)
    cached = tool.bin_dir / binary
    if cached.is_file() and os.access(cached, os.X_OK):
        return cached
    return None


# Binaries already resolved by this process. Looking one up can run the
# binary found on PATH to read its version, and tests call kubectl hundreds
# of times, so the answer is kept once found (the environment does not
# change under a running process).
_resolved: dict[str, Path] = {}


def ensure(binary: str) -> Path:
    """Return a usable binary, building and caching it when needed."""
    if binary in _resolved:
        return _resolved[binary]
    found = find(binary)
    if found is None:
        tool = _tool_for(binary)
        build(tool)
        found = tool.bin_dir / binary
    _resolved[binary] = found
    return found


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _go(args: list[str], cwd: Path) -> str:
    env = dict(os.environ)
    env.setdefault("CGO_ENABLED", "0")
    env["GOFLAGS"] = "-buildvcs=false -mod=mod"
    env["GOTOOLCHAIN"] = "local"
    print(f"+ go {' '.join(args)}", file=sys.stderr, flush=True)
    proc = subprocess.run(["go", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise BuildError(f"go {' '.join(args)} failed in {cwd}:\n{proc.stderr[-4000:]}")
    return proc.stdout


class BuildError(RuntimeError):
    pass


def _module_info(module: str, version: str, cwd: Path) -> dict[str, object]:
    out = _go(["mod", "download", "-json", f"{module}@{version}"], cwd)
    info: dict[str, object] = json.loads(out)
    return info


def _staging_pins(gomod_path: Path, staging_version: str) -> dict[str, str]:
    """Modules that k8s.io/kubernetes replaces with ./staging/src/... ."""
    text = gomod_path.read_text()
    mods = re.findall(r"^\s*(k8s\.io/[\w.-]+)\s*=>\s*\./staging/", text, flags=re.M)
    return {m: staging_version for m in mods}


def build(tool: Tool) -> None:
    """Build every binary of one tool into its cache folder."""
    lock = cache_root() / "locks" / f"{tool.name}-{tool.version}.lock"
    with _lock(lock):
        if all((tool.bin_dir / b).is_file() for b in tool.binaries):
            return
        started = time.monotonic()
        work = tool.build_dir
        work.mkdir(parents=True, exist_ok=True)
        go_version = _go(["env", "GOVERSION"], work).strip().removeprefix("go")
        # A go directive needs major.minor.patch; `go env GOVERSION` may omit the patch.
        go_directive = ".".join([*go_version.split("."), "0", "0"][:3])
        (work / "go.mod").write_text(f"module llmgw.local/build/{tool.name}\n\ngo {go_directive}\n")
        info = _module_info(tool.module, tool.version, work)
        pins = dict(tool.pins)
        ldflags = list(tool.ldflags)
        if "@staging" in pins:
            pins = _staging_pins(Path(str(info["GoMod"])), pins.pop("@staging"))
            origin = info.get("Origin")
            commit = origin.get("Hash", "unknown") if isinstance(origin, dict) else "unknown"
            ldflags = list(_kubernetes_ldflags(tool.version, str(commit)))
        replaces = "\n".join(f"\t{m} => {m} {v}" for m, v in sorted(pins.items()))
        gomod = (
            f"module llmgw.local/build/{tool.name}\n\ngo {go_directive}\n\n"
            f"require {tool.module} {tool.version}\n"
        )
        if replaces:
            gomod += f"\nreplace (\n{replaces}\n)\n"
        (work / "go.mod").write_text(gomod)
        imports = "\n".join(f'\t_ "{pkg}"' for pkg in tool.binaries.values())
        (work / "tools.go").write_text(f"//go:build tools\n\npackage tools\n\nimport (\n{imports}\n)\n")
        _go(["mod", "tidy"], work)
        tool.bin_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{tool.name}-", dir=tool.bin_dir.parent))
        try:
            for i, (binary, pkg) in enumerate(tool.binaries.items(), start=1):
                print(
                    f"  {tool.name}: compiling {binary} ({i}/{len(tool.binaries)}, "
                    f"{time.monotonic() - started:.0f}s so far)",
                    file=sys.stderr,
                    flush=True,
                )
                _go(
                    [
                        "build",
                        "-trimpath",
                        "-ldflags",
                        " ".join(["-s", "-w", *ldflags]),
                        "-o",
                        str(staging / binary),
                        pkg,
                    ],
                    work,
                )
            if tool.bin_dir.exists():
                shutil.rmtree(tool.bin_dir)
            staging.rename(tool.bin_dir)
        finally:
            if staging.exists():
                shutil.rmtree(staging)
        print(
            f"built {tool.name} {tool.version} in {time.monotonic() - started:.0f}s -> {tool.bin_dir}",
            file=sys.stderr,
            flush=True,
        )


# kwok ships its lifecycle "stages" as YAML in its module rather than compiled
# in; without them it refuses to start. These are the upstream "fast" set.
KWOK_STAGES = (
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
)


def kwok_stages() -> Path:
    """A multi-document YAML of kwok's stages, assembled from its pinned module."""
    tool = tools()["kwok"]
    target = tool.bin_dir / "stages.yaml"
    if target.is_file():
        return target
    work = tool.build_dir
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "go.mod").exists():
        (work / "go.mod").write_text("module llmgw.local/build/kwok-stages\n")
    module_dir = Path(str(_module_info(tool.module, tool.version, work)["Dir"]))
    docs = [(module_dir / rel).read_text().strip() for rel in KWOK_STAGES]
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text("\n---\n".join(docs) + "\n")
    tmp.rename(target)
    return target


ROUGH_MINUTES = {"kubernetes": 10, "etcd": 2, "helm": 2, "kwok": 1, "kubeconform": 1, "jaeger": 12}
"""A first build's rough length on two cores, to say up front what is coming (not a bound)."""


def plan(missing: list[Tool]) -> list[str]:
    """What a build of ``missing`` will do and roughly how long it takes, before it starts."""
    if not missing:
        return []
    minutes = sum(ROUGH_MINUTES.get(t.name, 2) for t in missing)
    lines = [
        f"Building {len(missing)} pinned tool(s) from their Go modules with `go` into "
        f"{cache_root() / 'bin'}: roughly {minutes} minutes on two cores, once; later runs reuse the cache.",
    ]
    for i, tool in enumerate(missing, start=1):
        what, rough = ", ".join(tool.binaries), ROUGH_MINUTES.get(tool.name, 2)
        lines.append(f"  {i}/{len(missing)} {tool.name} {tool.version} ({what}): ~{rough} min")
    return lines


def ensure_all(names: list[str] | None = None) -> dict[str, Path]:
    result: dict[str, Path] = {}
    wanted = [t for t in tools().values() if not names or t.name in names]
    missing = [t for t in wanted if any(find(b) is None for b in t.binaries)]
    for line in plan(missing):
        print(line, file=sys.stderr, flush=True)
    for tool in wanted:
        if tool in missing:
            print(
                f"[{missing.index(tool) + 1}/{len(missing)}] {tool.name} {tool.version}: building",
                file=sys.stderr,
                flush=True,
            )
        for binary in tool.binaries:
            result[binary] = ensure(binary)
        if tool.name == "kwok":
            result["kwok-stages"] = kwok_stages()
    return result

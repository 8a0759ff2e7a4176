"""Build the control-plane binaries from Go modules and cache them by version.

Kubernetes cannot be `go install`-ed (its go.mod maps staging modules to local folders), so each
component is built from a small wrapper module of ours under ``gomod/`` that pins the staging modules
to their published versions. Binaries land in a cache outside the checkout, keyed by version, so a
clean clone on the same machine reuses them and an empty cache triggers a rebuild.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

KUBERNETES_VERSION = "v1.37.2"
ETCD_VERSION = "v3.6.16"
HELM_VERSION = "v3.22.0"
# The newest release; it builds with its own (v0.36) Kubernetes libraries, one minor version
# behind the control plane, which is within client-go's supported skew.
METRICS_SERVER_VERSION = "v0.9.0"

GOMOD_DIR = pathlib.Path(__file__).parent / "gomod"


def cache_root() -> pathlib.Path:
    explicit = os.environ.get("VK_OPERATOR_CACHE")
    if explicit:
        return pathlib.Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = pathlib.Path(xdg) if xdg else pathlib.Path.home() / ".cache"
    return base / "vk-operator"


@dataclasses.dataclass(frozen=True)
class Component:
    name: str  # the cache folder prefix (and the wrapper module folder under gomod/ unless `module`)
    version: str
    packages: tuple[str, ...]  # Go import paths of main packages
    binaries: tuple[str, ...]  # the binary each package becomes, same order
    ldflags: tuple[str, ...] = ()
    module: str = ""  # the wrapper module folder under gomod/ when it is not `name`

    def directory(self) -> pathlib.Path:
        return cache_root() / f"{self.name}-{self.version}"

    def is_built(self) -> bool:
        return all((self.directory() / b).is_file() for b in self.binaries)


def _kubernetes_ldflags() -> tuple[str, ...]:
    major, minor = KUBERNETES_VERSION.lstrip("v").split(".")[:2]
    built = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    flags = []
    # Without these stamps the binaries report v0.0.0-master, which breaks version skew checks.
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={KUBERNETES_VERSION}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate={built}",
        ]
    return tuple(flags)


_KUBERNETES_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
KUBERNETES = Component(
    "kubernetes",
    KUBERNETES_VERSION,
    tuple(f"k8s.io/kubernetes/cmd/{c}" for c in _KUBERNETES_BINARIES),
    _KUBERNETES_BINARIES,
    _kubernetes_ldflags(),
)
ETCD = Component("etcd", ETCD_VERSION, ("go.etcd.io/etcd/server/v3",), ("etcd",))
HELM = Component(
    "helm",
    HELM_VERSION,
    ("helm.sh/helm/v3/cmd/helm",),
    ("helm",),
    (f"-X helm.sh/helm/v3/internal/version.version={HELM_VERSION}",),
)
COMPONENTS = (ETCD, KUBERNETES, HELM)
# Not in COMPONENTS: a cold build takes ~6.5 minutes on 2 cores, so only the test that needs it
# (`kubectl top`) builds it, through `ensure_built((METRICS_SERVER,))`, and caches it like the rest.
METRICS_SERVER = Component(
    "metrics-server",
    METRICS_SERVER_VERSION,
    ("sigs.k8s.io/metrics-server/cmd/metrics-server",),
    ("metrics-server",),
    # metrics-server reports client-go's version as its own (its Makefile stamps the same).
    (
        f"-X k8s.io/client-go/pkg/version.gitVersion={METRICS_SERVER_VERSION}",
        "-X k8s.io/client-go/pkg/version.gitTreeState=clean",
    ),
)
# The real node's kubelet (`devcluster node up`): the same wrapper module and stamps as the control
# plane, a cache folder of its own (a build replaces its whole folder) and, like metrics-server,
# built only when asked for: a cold build takes ~7 minutes on 2 cores.
KUBELET = Component(
    "kubelet",
    KUBERNETES_VERSION,
    ("k8s.io/kubernetes/cmd/kubelet",),
    ("kubelet",),
    _kubernetes_ldflags(),
    module="kubernetes",
)


def _build(component: Component) -> None:
    target = component.directory()
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build into a scratch folder and rename it into place, so an interrupted build never leaves
    # a half-filled cache folder that a later run would trust.
    scratch = pathlib.Path(tempfile.mkdtemp(prefix=f".{component.name}-", dir=target.parent))
    env = dict(os.environ, CGO_ENABLED="0", GOTOOLCHAIN="local", GOFLAGS="-mod=mod")
    cmd = [
        "go",
        "build",
        "-trimpath",
        "-ldflags",
        " ".join(("-s", "-w", *component.ldflags)),
        "-o",
        # One package: name the output file (a /v3 module path would otherwise name it `server`).
        f"{scratch}/{component.binaries[0]}" if len(component.packages) == 1 else f"{scratch}/",
        *component.packages,
    ]
    print(
        f"devcluster: building {component.name} {component.version} (cold builds take minutes)",
        file=sys.stderr,
        flush=True,
    )
    try:
        subprocess.run(cmd, cwd=GOMOD_DIR / (component.module or component.name), env=env, check=True)
        if target.exists():
            shutil.rmtree(target)
        scratch.rename(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def ensure_built(components: tuple[Component, ...] = COMPONENTS) -> dict[str, pathlib.Path]:
    """Return a map binary name -> path, building whatever the cache lacks."""
    paths: dict[str, pathlib.Path] = {}
    for component in components:
        if not component.is_built():
            _build(component)
        for binary in component.binaries:
            paths[binary] = component.directory() / binary
    return paths


if __name__ == "__main__":
    for name, path in ensure_built().items():
        print(f"{name}: {path}")

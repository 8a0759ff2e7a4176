"""Build the virtual kubelet's OCI image with no container engine and no registry (`make image`).

The root filesystem is Debian's (mmdebstrap, the minbase variant with the same documentation
excludes as Debian's ``-slim`` images, so ``Containerfile`` can start ``FROM debian:bookworm-slim``
and hold the same base), with the project's wheels installed into a venv; umoci packs it as an OCI
layout and skopeo writes it as a docker archive that ``ctr images import``, ``docker load`` and
``podman load`` all read. The archive is cached under ``cache_root()`` by a key over every input
(each wheel's hash, this script, the base packages), so an unchanged tree reuses it.

Also the pause image the real node's sandboxes need (no registry is reachable here): a static Go
binary from ``gomod/pause``, packed the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

from vk_operator import __version__
from vk_operator.devcluster.build import GOMOD_DIR, cache_root

REPO = pathlib.Path(__file__).resolve().parents[2]
REPOSITORY = "ghcr.io/vk-operator/virtual-kubelet"  # the chart's default image.repository
IMAGE = f"{REPOSITORY}:{__version__}"  # the chart's default tag is its appVersion, this version
EXTRAS = ("azure", "aws")  # the providers' SDKs the image carries (aci, azurebatch; fargate); mock needs none
USER = "65532:65532"  # the chart's runAsUser/runAsGroup; deliberately no passwd entry for it
VENV = "/opt/vk"
ENTRYPOINT = f"{VENV}/bin/virtual-kubelet"
PATH = f"{VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SUITE = "bookworm"
# Debian's python3 is the interpreter of the venv: its minor version must match the wheels'.
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
MIRRORS = (
    f"deb http://deb.debian.org/debian {SUITE} main",
    f"deb http://deb.debian.org/debian {SUITE}-updates main",
    f"deb http://deb.debian.org/debian-security {SUITE}-security main",
)
# What debian:*-slim leaves out (debuerreotype's slimming), kept out of the image the same way.
PATH_EXCLUDES = (
    "/usr/share/doc/*",
    "/usr/share/info/*",
    "/usr/share/linda/*",
    "/usr/share/lintian/overrides/*",
    "/usr/share/locale/*",
    "/usr/share/man/*",
)
PATH_INCLUDES = ("/usr/share/doc/*/copyright",)  # licences stay
# A fixed epoch: mmdebstrap, the wheels' zip entries and the layer use it instead of "now".
SOURCE_DATE_EPOCH = "1700000000"
RESOLVE_TTL = 12 * 3600  # seconds an unchanged tree's image key is trusted without resolving again
KEEP_IMAGES = 3  # worktrees and branches of one machine share the cache
RECIPE = 1  # bump when the build changes in a way the constants here do not show
TOOLS = {"mmdebstrap": "mmdebstrap", "umoci": "umoci", "skopeo": "skopeo"}  # command -> Debian package

PAUSE_IMAGE = "vk-operator.local/pause:1"  # a name no registry serves: it is only ever imported
PAUSE_USER = "65535:65535"


def labels() -> dict[str, str]:
    return {
        "org.opencontainers.image.title": "vk-operator",
        "org.opencontainers.image.description": "A Virtual Kubelet in Python",
        "org.opencontainers.image.version": __version__,
        "org.opencontainers.image.licenses": "Apache-2.0",
        "org.opencontainers.image.source": "https://github.com/vk-operator/vk-operator",
    }


class ImageError(RuntimeError):
    """A step of the image build failed; the message says which."""


def _require_tools() -> None:
    missing = sorted(pkg for cmd, pkg in TOOLS.items() if shutil.which(cmd) is None)
    if missing:
        packages = " ".join(missing)
        raise ImageError(f"missing {packages}: `make image` installs them (apt-get install -y {packages})")


def _run(
    *cmd: str | pathlib.Path, env: dict[str, str] | None = None, cwd: pathlib.Path | None = None
) -> None:
    result = subprocess.run([str(c) for c in cmd], env=env, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
        raise ImageError(f"{' '.join(str(c) for c in cmd[:3])} ... failed ({result.returncode}):\n{tail}")


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def copy_sources(tree: pathlib.Path) -> None:
    """What goes into the project's wheel. Not in the image: this dev tool (nothing at run time
    imports it) and the README (the wheel's long description): editing either makes no new image."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc", ".mypy_cache", "devcluster")
    tree.mkdir()
    shutil.copy2(REPO / "pyproject.toml", tree / "pyproject.toml")
    (tree / "README.md").write_text("vk-operator: a Virtual Kubelet in Python.\n")
    for package in ("vk_operator", "providers"):
        shutil.copytree(REPO / package, tree / package, ignore=ignore)


def tree_hash(tree: pathlib.Path) -> str:
    digest = hashlib.sha256(f"{RECIPE} {EXTRAS}".encode())
    for path in sorted(p for p in tree.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(tree)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def build_wheels(out: pathlib.Path, tree: pathlib.Path) -> list[pathlib.Path]:
    """The project's wheel (from the copied sources ``tree``: no build/ or egg-info left in the
    checkout) and every dependency's, with fixed zip timestamps so the same tree hashes the same.
    The recipe is part of the key (RECIPE, the constants, the hooks), not this file's bytes."""
    env = dict(os.environ, SOURCE_DATE_EPOCH=SOURCE_DATE_EPOCH)
    extras = f"[{','.join(EXTRAS)}]" if EXTRAS else ""
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", out, f"{tree}{extras}", env=env)
    return sorted(out.glob("*.whl"))


def image_key(wheels: list[pathlib.Path]) -> str:
    """A hash of everything the image is made of."""
    inputs = {
        "recipe": RECIPE,
        "wheels": {w.name: _sha256(w) for w in wheels},
        "base": [SUITE, *BASE_PACKAGES, *MIRRORS, *PATH_EXCLUDES, *PATH_INCLUDES],
        "config": [IMAGE, *_config()],
        "hooks": customize_hooks(pathlib.Path("/wheels")),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


def customize_hooks(wheels: pathlib.Path) -> list[str]:
    """mmdebstrap's customize hooks: the venv with our wheels, then no pip and no caches."""
    return [
        f'mkdir -p "$1/tmp/wheels" && cp {wheels}/*.whl "$1/tmp/wheels/"',
        f'chroot "$1" python3 -m venv {VENV}',
        f'chroot "$1" {VENV}/bin/pip install -q --no-index --no-compile --find-links /tmp/wheels '
        f"'vk-operator[{','.join(EXTRAS)}]'",
        # Byte-compile once, at build time: the root filesystem is read-only at run time.
        f'chroot "$1" {VENV}/bin/python -m compileall -q -j 0 {VENV}/lib',
        # The venv's installers are not needed at run time (and setuptools is 9 MB).
        f'chroot "$1" {VENV}/bin/pip uninstall -q -y pip setuptools',
        'rm -rf "$1/tmp/wheels" "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/var/log/*',
    ]


def _rootfs(rootfs: pathlib.Path, wheels: pathlib.Path) -> None:
    hooks = customize_hooks(wheels)
    dpkg_opts = [f"--dpkgopt=path-exclude={p}" for p in PATH_EXCLUDES]
    dpkg_opts += [f"--dpkgopt=path-include={p}" for p in PATH_INCLUDES]
    # A clean environment: the host's pip settings (find-links, certificates) must not leak in.
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH}
    _run(
        "mmdebstrap",
        "--quiet",
        "--mode=root",
        "--variant=minbase",
        # /usr merged by mmdebstrap itself: otherwise bookworm pulls in usrmerge and with it perl (50 MB).
        "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
        f"--include={','.join(BASE_PACKAGES)}",
        *dpkg_opts,
        *(f"--customize-hook={h}" for h in hooks),
        SUITE,
        rootfs,
        *MIRRORS,
        env=env,
    )


def _pack(
    rootfs: pathlib.Path,
    work: pathlib.Path,
    name: str,
    config: list[str],
    archive: pathlib.Path,
) -> None:
    """rootfs -> one-layer OCI layout (umoci) -> docker archive named ``name`` (skopeo)."""
    layout = work / "oci"
    tag = name.rsplit(":", 1)[1]
    _run("umoci", "init", "--layout", layout)
    _run("umoci", "new", "--image", f"{layout}:{tag}")
    _run("umoci", "insert", "--image", f"{layout}:{tag}", rootfs, "/")
    _run("umoci", "config", "--image", f"{layout}:{tag}", *config)
    _run("skopeo", "copy", "--quiet", f"oci:{layout}:{tag}", f"docker-archive:{archive}:{name}")


def _config() -> list[str]:
    """umoci's image configuration: non-root, the venv's entry point, the labels."""
    return [
        f"--config.user={USER}",
        f"--config.entrypoint={ENTRYPOINT}",
        "--config.workingdir=/",
        f"--config.env=PATH={PATH}",
        "--config.env=PYTHONDONTWRITEBYTECODE=1",
        *_label_args(),
    ]


def _label_args() -> list[str]:
    args = []
    for key, value in labels().items():
        args += [f"--config.label={key}={value}", f"--manifest.annotation={key}={value}"]
    return args


def _prune(keep: int) -> None:
    """Only the newest images stay cached (each is ~200 MB; every source change makes a new one)."""
    built = sorted(cache_root().glob("image-*/"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in built[keep:]:
        shutil.rmtree(old, ignore_errors=True)


def ensure_image(refresh: bool = False) -> pathlib.Path:
    """The image's docker archive, built unless the cache holds one for these inputs.

    The key is over the wheels, so the dependencies are resolved (pip, the index) to know it; that
    takes 15-40 s on a busy machine, so the key found for an unchanged source tree is reused for
    RESOLVE_TTL (or until ``refresh``) before the dependencies are resolved again."""
    _require_tools()
    with tempfile.TemporaryDirectory(prefix="vk-wheels-") as work:
        tree = pathlib.Path(work) / "vk-operator"
        copy_sources(tree)
        index = cache_root() / "vk-image-index" / f"{tree_hash(tree)}.json"
        with contextlib.suppress(OSError, ValueError, KeyError):
            known = pathlib.Path(json.loads(index.read_text())["archive"])
            if not refresh and time.time() - index.stat().st_mtime < RESOLVE_TTL and known.is_file():
                os.utime(known.parent)  # recently used: kept by _prune
                return known
        wheel_dir = pathlib.Path(work) / "wheels"
        wheels = build_wheels(wheel_dir, tree)
        target = cache_root() / f"image-{__version__}-{image_key(wheels)}"
        archive = target / "virtual-kubelet.tar"
        if not archive.is_file():
            _build_image(target, archive, wheel_dir)
        os.utime(target)
        index.parent.mkdir(parents=True, exist_ok=True)
        index.write_text(json.dumps({"archive": str(archive)}))
    return archive


def _build_image(target: pathlib.Path, archive: pathlib.Path, wheel_dir: pathlib.Path) -> None:
    _prune(keep=KEEP_IMAGES - 1)
    print(f"devcluster: building the image {IMAGE} (a cold build takes minutes)", file=sys.stderr)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Built in a scratch folder renamed into place: an interrupted build is never trusted.
    scratch = pathlib.Path(tempfile.mkdtemp(prefix=".image-", dir=target.parent))
    try:
        _rootfs(scratch / "rootfs", wheel_dir)
        _pack(scratch / "rootfs", scratch, IMAGE, _config(), scratch / archive.name)
        shutil.rmtree(scratch / "rootfs")
        shutil.rmtree(scratch / "oci")
        shutil.rmtree(target, ignore_errors=True)
        scratch.rename(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def ensure_pause_image() -> pathlib.Path:
    """The sandbox ("pause") image: a static binary that sleeps, reaps and exits 0 on SIGTERM."""
    _require_tools()
    source = GOMOD_DIR / "pause"
    inputs = b"".join((source / f).read_bytes() for f in ("go.mod", "main.go"))
    key = hashlib.sha256(inputs + f"{PAUSE_IMAGE} {PAUSE_USER}".encode()).hexdigest()[:16]
    target = cache_root() / f"pause-{key}"
    archive = target / "pause.tar"
    if archive.is_file():
        return archive
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = pathlib.Path(tempfile.mkdtemp(prefix=".pause-", dir=target.parent))
    try:
        rootfs = scratch / "rootfs"
        rootfs.mkdir()
        env = dict(os.environ, CGO_ENABLED="0", GOTOOLCHAIN="local", GOFLAGS="-mod=mod")
        _run("go", "build", "-trimpath", "-ldflags=-s -w", "-o", rootfs / "pause", ".", env=env, cwd=source)
        config = [f"--config.user={PAUSE_USER}", "--config.entrypoint=/pause"]
        _pack(rootfs, scratch, PAUSE_IMAGE, config, scratch / archive.name)
        shutil.rmtree(rootfs)
        shutil.rmtree(scratch / "oci")
        shutil.rmtree(target, ignore_errors=True)
        scratch.rename(target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return archive


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vk_operator.devcluster.image")
    parser.add_argument("what", nargs="?", choices=("image", "pause"), default="image")
    parser.add_argument("--refresh", action="store_true", help="resolve the dependencies again now")
    args = parser.parse_args(argv)
    try:
        archive = ensure_image(args.refresh) if args.what == "image" else ensure_pause_image()
    except ImageError as exc:
        print(f"image: {exc}", file=sys.stderr)
        return 1
    size_mb = archive.stat().st_size / 1e6
    print(f"{IMAGE if args.what == 'image' else PAUSE_IMAGE}: {archive} ({size_mb:.0f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

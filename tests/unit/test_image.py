"""The image recipe in one place: `make image` (vk_operator/devcluster/image.py), the Containerfile for
Docker/buildah users and the chart's default image reference must describe the same image."""

from __future__ import annotations

import json
import pathlib
import re
import shlex

import yaml

from tests.conftest import REPO
from vk_operator import __version__
from vk_operator.devcluster import image

CONTAINERFILE = (REPO / "Containerfile").read_text()
CHART = REPO / "charts/virtual-kubelet"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", CONTAINERFILE)
    rows = [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]
    return [(row.split(None, 1)[0], row.split(None, 1)[1]) for row in rows]


def single(name: str) -> str:
    found = [args for instruction, args in instructions() if instruction == name]
    assert len(found) == 1, (name, found)
    return found[0]


def run_commands() -> list[str]:
    commands = []
    for instruction, args in instructions():
        if instruction == "RUN":
            commands += [" ".join(c.split()) for c in args.split(" && ")]
    return commands


def test_the_base_is_the_same_debian_release_and_packages() -> None:
    assert single("FROM") == f"docker.io/library/debian:{image.SUITE}-slim"
    install = next(c for c in run_commands() if "apt-get install" in c)
    packages = [word for word in shlex.split(install)[5:] if not word.startswith("-")]
    assert tuple(packages) == image.BASE_PACKAGES


def test_the_venv_is_made_the_same_way() -> None:
    # make image's chroot hooks, without the chroot, are the Containerfile's commands in the same order.
    chrooted = [h for h in image.customize_hooks(image.REPO) if h.startswith("chroot")]
    hooks = [h.removeprefix('chroot "$1" ') for h in chrooted]
    assert hooks, "no hooks"
    commands = run_commands()
    positions = [commands.index(" ".join(h.split())) for h in hooks]
    assert positions == sorted(positions)
    assert f"'vk-operator[{','.join(image.EXTRAS)}]'" in CONTAINERFILE


def test_user_entrypoint_environment_and_labels_are_the_same() -> None:
    assert single("USER") == image.USER
    assert json.loads(single("ENTRYPOINT")) == [image.ENTRYPOINT]
    env = dict(pair.split("=", 1) for pair in shlex.split(single("ENV")))
    assert env == {"PATH": image.PATH, "PYTHONDONTWRITEBYTECODE": "1"}
    labels = dict(pair.split("=", 1) for pair in shlex.split(single("LABEL")))
    assert labels == image.labels()
    assert labels["org.opencontainers.image.version"] == __version__


def test_the_charts_default_image_is_the_one_make_image_builds() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert chart["appVersion"] == __version__  # the default tag (image.tag "" -> .Chart.AppVersion)
    assert values["image"]["tag"] == ""
    assert f"{values['image']['repository']}:{chart['appVersion']}" == image.IMAGE


def test_the_image_sources_leave_out_the_dev_tool_and_follow_runtime_files(tmp_path: pathlib.Path) -> None:
    tree = tmp_path / "tree"
    image.copy_sources(tree)
    assert (tree / "vk_operator/cli.py").is_file() and (tree / "providers/mock/provider.py").is_file()
    assert not (tree / "vk_operator/devcluster").exists()  # its edits make no new image
    assert not list(tree.rglob("__pycache__"))
    before = image.tree_hash(tree)
    (tree / "providers/mock/config.py").write_text((tree / "providers/mock/config.py").read_text() + "\n")
    assert image.tree_hash(tree) != before

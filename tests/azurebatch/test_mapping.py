"""The pod -> task mapping (pure) and the Batch ids, as tables."""

from __future__ import annotations

import base64
import copy
import re
import shlex
import subprocess
import uuid
from typing import Any

import pytest

from providers.azurebatch import mapping, naming
from providers.azurebatch.mapping import MappingOptions, task_request
from providers.azurebatch.status import pod_ref
from vk_operator.provider import (
    InvalidPodError,
    PermanentError,
    PreparedPod,
    RegistryCredential,
    ResolvedVolume,
)

UID = "6f1e2d3c-4b5a-4978-8a6b-5c4d3e2f1a0b"


def prepared(
    *containers: dict[str, Any],
    volumes: dict[str, ResolvedVolume] | None = None,
    pod_volumes: list[dict[str, Any]] | None = None,
    secret_env: frozenset[tuple[str, str]] = frozenset(),
    credentials: tuple[RegistryCredential, ...] = (),
    **spec: Any,
) -> PreparedPod:
    pod = {
        "metadata": {"namespace": "ns", "name": "web", "uid": UID},
        "spec": {
            "restartPolicy": "Never",
            "containers": list(containers) or [{"name": "main", "image": "busybox:1.36"}],
            "volumes": pod_volumes or [],
            **spec,
        },
    }
    return PreparedPod(pod, volumes or {}, secret_env, credentials)


def env_of(body: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in body["environmentSettings"]}


# -- ids ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("namespace", "name", "uid"),
    [
        ("default", "web", UID),
        ("a" * 63, "b" * 253, UID),
        ("kube.system", "my.pod.v1", UID),
        ("ns", "x", "UPPER-" + UID[6:]),
    ],
)
def test_task_ids_follow_batch_rules_and_keep_the_uid(namespace: str, name: str, uid: str) -> None:
    task_id = naming.task_id(namespace, name, uid)
    assert naming.ID_RE.fullmatch(task_id), task_id
    assert task_id.endswith(uid.lower())
    assert task_id == naming.task_id(namespace, name, uid)  # derived: idempotent creates


def test_task_ids_differ_for_pods_of_one_name_with_other_uids() -> None:
    assert naming.task_id("ns", "web", UID) != naming.task_id("ns", "web", str(uuid.uuid4()))


@pytest.mark.parametrize(
    ("node", "expected"),
    [("vk-batch", "vk-vk-batch"), ("node_1", "vk-node_1")],
)
def test_job_ids_of_simple_node_names_are_readable(node: str, expected: str) -> None:
    assert naming.job_id(node) == expected


@pytest.mark.parametrize("node", ["virtual.node.example.com", "n" * 80, "a.b", "a-b"])
def test_job_ids_are_valid_and_distinct(node: str) -> None:
    job = naming.job_id(node)
    assert naming.ID_RE.fullmatch(job), job
    assert job != naming.job_id(node + "x")


# -- command lines -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("container", "command_line", "entrypoint"),
    [
        ({"command": ["sh", "-c", "echo 'hi there' $HOME"]}, "-c 'echo '\"'\"'hi there'\"'\"' $HOME'", "sh"),
        ({"command": ["python"], "args": ["-c", "print(1)"]}, "-c 'print(1)'", "python"),
        ({"args": ["--port", "80", "a b"]}, "--port 80 'a b'", None),
        ({}, "", None),  # the image's own entrypoint and command
        ({"command": ["/bin/true"]}, "", "/bin/true"),
    ],
)
def test_command_and_args_are_quoted_words(
    container: dict[str, Any], command_line: str, entrypoint: str | None
) -> None:
    request = task_request(prepared({"name": "main", "image": "busybox", **container}), MappingOptions())
    body = request.body
    assert body["commandLine"] == command_line
    run_options = shlex.split(body["containerSettings"]["containerRunOptions"])
    if entrypoint is None:
        assert "--entrypoint" not in run_options
    else:
        assert run_options[run_options.index("--entrypoint") + 1] == entrypoint
    assert not request.bootstrapped
    # What docker gets after the image: the words of the pod, unchanged.
    words = ([entrypoint] if entrypoint else []) + shlex.split(command_line)
    assert words == [*container.get("command", []), *container.get("args", [])]


def test_a_command_line_over_the_limit_goes_in_the_environment_and_runs_unchanged(tmp_path: Any) -> None:
    big = "x" * 40_000
    container = {
        "name": "main",
        "image": "busybox",
        "command": ["sh", "-c", 'printf %s "$1" | wc -c', "sh", big],
    }
    request = task_request(prepared(container), MappingOptions())
    body = request.body
    assert request.bootstrapped
    assert len(body["commandLine"]) < 1000
    assert "--entrypoint /bin/sh" in body["containerSettings"]["containerRunOptions"]
    env = env_of(body)
    chunks = [env[k] for k in sorted(env) if k.startswith(mapping.ENV_BOOT)]
    assert chunks and all(len(c) <= mapping.ENV_CHUNK for c in chunks)
    # Run the command line as the container would (sh with the task's environment): never truncated.
    script_env = {**env, "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        ["/bin/sh", *shlex.split(body["commandLine"])],
        env=script_env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.stdout.strip() == "40000", out.stderr


def test_a_task_over_the_request_limit_is_refused_naming_the_field() -> None:
    container = {"name": "main", "image": "busybox", "command": ["echo", "y" * (1024 * 1024)]}
    with pytest.raises(InvalidPodError) as caught:
        task_request(prepared(container), MappingOptions())
    assert caught.value.field == "spec.containers[0].command"


# -- files -------------------------------------------------------------------------------------------
def test_volume_files_are_written_by_the_bootstrap_with_their_modes(tmp_path: Any) -> None:
    root = tmp_path / "root"
    config = ResolvedVolume(
        "config", "configMap", {"app.conf": b"a=1\n", "dir/b.txt": b"b"}, False, modes={"app.conf": 0o600}
    )
    scratch = ResolvedVolume("scratch", "emptyDir", {}, False, medium="")
    container = {
        "name": "main",
        "image": "busybox",
        "command": ["sh", "-c", "cat $0/etc/app/app.conf; ls $0/scratch", str(root)],
        "volumeMounts": [
            {"name": "config", "mountPath": f"{root}/etc/app"},
            {"name": "scratch", "mountPath": f"{root}/scratch"},
        ],
    }
    body = task_request(
        prepared(container, volumes={"config": config, "scratch": scratch}), MappingOptions()
    ).body
    out = subprocess.run(
        ["/bin/sh", *shlex.split(body["commandLine"])],
        env=env_of(body),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "a=1\n"
    assert (root / "etc/app/dir/b.txt").read_bytes() == b"b"
    assert (root / "etc/app/app.conf").stat().st_mode & 0o777 == 0o600
    assert (root / "scratch").is_dir()


def test_files_need_a_command() -> None:
    config = ResolvedVolume("config", "configMap", {"a": b"1"}, False)
    container = {
        "name": "main",
        "image": "busybox",
        "volumeMounts": [{"name": "config", "mountPath": "/etc/x"}],
    }
    with pytest.raises(InvalidPodError) as caught:
        task_request(prepared(container, volumes={"config": config}), MappingOptions())
    assert caught.value.field == "spec.containers[0].command"


def test_secrets_are_refused_unless_allowed_and_the_token_volume_is_left_out() -> None:
    secret = ResolvedVolume("creds", "secret", {"password": b"hunter2"}, True)
    token = ResolvedVolume("kube-api-access-x", "projected", {"token": b"t"}, True)
    token_source = {
        "name": "kube-api-access-x",
        "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]},
    }
    container = {
        "name": "main",
        "image": "busybox",
        "command": ["true"],
        "env": [{"name": "PASSWORD", "value": "hunter2"}],
        "volumeMounts": [
            {"name": "kube-api-access-x", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}
        ],
    }
    secret_env = frozenset({("main", "PASSWORD")})
    with pytest.raises(InvalidPodError) as caught:
        task_request(
            prepared(
                container,
                volumes={"kube-api-access-x": token},
                pod_volumes=[token_source],
                secret_env=secret_env,
            ),
            MappingOptions(),
        )
    assert caught.value.field == "spec.containers[0].env[0]"
    no_env = {**container, "env": []}
    request = task_request(
        prepared(no_env, volumes={"kube-api-access-x": token}, pod_volumes=[token_source]),
        MappingOptions(),
    )
    assert not request.bootstrapped  # the token volume is not delivered
    with_secret = {**no_env, "volumeMounts": [{"name": "creds", "mountPath": "/etc/creds"}]}
    with pytest.raises(InvalidPodError) as caught:
        task_request(prepared(with_secret, volumes={"creds": secret}), MappingOptions())
    assert caught.value.field == "spec.containers[0].volumeMounts[0].name"
    allowed = task_request(
        prepared(with_secret, volumes={"creds": secret}), MappingOptions(secrets="task_environment")
    )
    assert allowed.bootstrapped


# -- the rest of the container ----------------------------------------------------------------------
def test_gpu_workdir_deadline_retention_retries_and_identity() -> None:
    container = {
        "name": "train",
        "image": "myregistry.azurecr.io/train:1",
        "command": ["python", "train.py"],
        "workingDir": "/work dir",
        "env": [{"name": "EPOCHS", "value": "3"}],
        "resources": {"limits": {"nvidia.com/gpu": "2"}},
    }
    creds = (
        RegistryCredential("docker.io", "hub", "pw1"),
        RegistryCredential("myregistry.azurecr.io", "acr", "pw2"),
    )
    options = MappingOptions(max_task_retry_count=5, retention="PT6H")
    body = task_request(
        prepared(container, credentials=creds, activeDeadlineSeconds=600, restartPolicy="OnFailure"),
        options,
    ).body
    run_options = shlex.split(body["containerSettings"]["containerRunOptions"])
    assert run_options[run_options.index("--gpus") + 1] == "2"
    assert run_options[run_options.index("--workdir") + 1] == "/work dir"
    assert body["containerSettings"]["imageName"] == "myregistry.azurecr.io/train:1"
    assert body["containerSettings"]["registry"] == {
        "registryServer": "https://myregistry.azurecr.io",  # the spec's format: uri
        "username": "acr",
        "password": "pw2",
    }
    assert body["constraints"] == {
        "maxTaskRetryCount": 5,
        "retentionTime": "PT6H",
        "maxWallClockTime": "PT600S",
    }
    assert body["displayName"] == "ns/web"
    env = env_of(body)
    assert env["EPOCHS"] == "3"
    assert env[naming.ENV_CONTAINER] == "train"
    ref = pod_ref(body)
    assert ref is not None and (ref.namespace, ref.name, ref.uid) == ("ns", "web", UID)
    assert body["id"] == naming.task_id("ns", "web", UID)


@pytest.mark.parametrize(
    ("image", "server"),
    [
        ("busybox", "docker.io"),
        ("library/nginx:1", "docker.io"),
        ("ghcr.io/a/b", "ghcr.io"),
        ("localhost:5000/x", "localhost:5000"),
    ],
)
def test_the_registry_of_an_image(image: str, server: str) -> None:
    assert mapping.image_registry(image) == server


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"image": ""}, "spec.containers[0].image"),
        ({"env": [{"name": "A=B", "value": "1"}]}, "spec.containers[0].env[0].name"),
        ({"env": [{"name": naming.ENV_UID, "value": "1"}]}, "spec.containers[0].env[0].name"),
        (
            {"resources": {"limits": {"nvidia.com/gpu": "half"}}},
            "spec.containers[0].resources.limits[nvidia.com/gpu]",
        ),
        (
            {"resources": {"limits": {"nvidia.com/gpu": "500m"}}},
            "spec.containers[0].resources.limits[nvidia.com/gpu]",
        ),
    ],
)
def test_malformed_containers_name_the_field(change: dict[str, Any], field: str) -> None:
    container = {"name": "main", "image": "busybox", **change}
    with pytest.raises(InvalidPodError) as caught:
        task_request(prepared(container), MappingOptions())
    assert caught.value.field == field


def test_a_bad_deadline_names_the_field() -> None:
    with pytest.raises(InvalidPodError) as caught:
        task_request(prepared(activeDeadlineSeconds=-1), MappingOptions())
    assert caught.value.field == "spec.activeDeadlineSeconds"


# -- several containers --------------------------------------------------------------------------------
def test_multi_container_pods_are_refused_with_a_permanent_reason_by_default() -> None:
    pod = prepared({"name": "a", "image": "busybox"}, {"name": "b", "image": "busybox"})
    with pytest.raises(PermanentError) as caught:
        task_request(pod, MappingOptions())
    assert caught.value.reason == mapping.MULTI_CONTAINER_REASON
    with_init = prepared(initContainers=[{"name": "init", "image": "busybox"}])
    with pytest.raises(PermanentError):
        task_request(with_init, MappingOptions())


def test_the_docker_wrapper_runs_init_then_app_containers_sharing_a_network() -> None:
    pod = prepared(
        {"name": "app", "image": "nginx:1", "resources": {"limits": {"nvidia.com/gpu": "1"}}},
        {
            "name": "side car",
            "image": "busybox",
            "command": ["sh", "-c", "echo 'x y'"],
            "env": [{"name": "A", "value": "1 2"}],
        },
        initContainers=[{"name": "init", "image": "busybox", "command": ["true"]}],
    )
    request = task_request(pod, MappingOptions(multi_container="docker_wrapper"))
    body = request.body
    assert "containerSettings" not in body
    assert body["userIdentity"]["autoUser"]["elevationLevel"] == "admin"
    env = env_of(body)
    script = base64.b64decode("".join(env[k] for k in sorted(env) if k.startswith(mapping.ENV_BOOT))).decode()
    lines = script.splitlines()
    init = next(i for i, line in enumerate(lines) if "--entrypoint true busybox" in line)
    app = next(i for i, line in enumerate(lines) if " nginx:1" in line)
    assert init < app
    assert "--gpus 1" in lines[app]
    assert all('--network=container:"$VK_POD"-pause' in lines[i] for i in (init, app))
    side = next(line for line in lines if line.startswith("docker run") and "side car" in line)
    assert "-e 'A=1 2'" in side and "'echo '\"'\"'x y'\"'\"''" in side
    assert env[naming.ENV_CONTAINER] == "app,side car"
    assert re.search(r'docker wait "\$VK_POD-app"', script)
    # POSIX sh accepts the script.
    checked = subprocess.run(["/bin/sh", "-n"], input=script, capture_output=True, text=True, timeout=10)
    assert checked.returncode == 0, checked.stderr


def test_mapping_does_not_change_the_pod() -> None:
    pod = prepared({"name": "main", "image": "busybox", "command": ["sh"], "args": ["-c", "true"]})
    before = copy.deepcopy(pod.pod)
    task_request(pod, MappingOptions())
    assert pod.pod == before


FAKE_DOCKER = """#!/bin/sh
echo "$@" >> "$DOCKER_LOG"
if [ "$1" = wait ]; then
  case "$2" in *-app) echo "${FAKE_EXIT:-0}";; *) echo 0;; esac
fi
exit 0
"""


def test_the_docker_wrapper_shares_volumes_and_returns_the_last_failure(tmp_path: Any) -> None:
    """The whole wrapper script run by /bin/sh, with a `docker` that records its calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    work = tmp_path / "wd"
    work.mkdir()
    config = ResolvedVolume("config", "configMap", {"app.conf": b"a=1\n"}, False, modes={"app.conf": 0o640})
    shared = ResolvedVolume("shared", "emptyDir", {}, False, medium="")
    pod = prepared(
        {
            "name": "app",
            "image": "nginx:1",
            "volumeMounts": [
                {"name": "shared", "mountPath": "/data"},
                {"name": "config", "mountPath": "/etc/app", "readOnly": True},
            ],
        },
        {
            "name": "side",
            "image": "busybox",
            "command": ["sleep", "1d"],
            "volumeMounts": [{"name": "shared", "mountPath": "/in"}],
        },
        initContainers=[
            {
                "name": "init",
                "image": "busybox",
                "command": ["true"],
                "volumeMounts": [{"name": "shared", "mountPath": "/out"}],
            }
        ],
        volumes={"config": config, "shared": shared},
        pod_volumes=[{"name": "shared", "emptyDir": {}}, {"name": "config", "configMap": {"name": "c"}}],
    )
    body = task_request(pod, MappingOptions(multi_container="docker_wrapper")).body
    log = tmp_path / "docker.log"
    env = {**env_of(body), "PATH": f"{bin_dir}:/usr/bin:/bin", "DOCKER_LOG": str(log), "FAKE_EXIT": "3"}
    argv = shlex.split(body["commandLine"])
    out = subprocess.run(argv, env=env, cwd=work, capture_output=True, text=True, timeout=30)
    assert out.returncode == 3, out.stderr  # the app container's exit code
    assert (work / "vk-volumes/1-config/app.conf").read_text() == "a=1\n"
    assert (work / "vk-volumes/1-config/app.conf").stat().st_mode & 0o777 == 0o640
    assert (work / "vk-volumes/0-shared").is_dir()
    calls = log.read_text().splitlines()
    runs = [c for c in calls if c.startswith("run ")]
    names = [r.split()[r.split().index("--name") + 1] for r in runs]
    assert [n.rsplit("-", 1)[1] for n in names] == ["pause", "init", "app", "side"]
    shared_dir = f"{work}/vk-volumes/0-shared"
    assert f"-v {shared_dir}:/out" in runs[1]
    assert f"-v {shared_dir}:/data -v {work}/vk-volumes/1-config:/etc/app:ro" in runs[2]
    assert f"-v {shared_dir}:/in" in runs[3]


def test_the_docker_wrapper_refuses_a_secret_volume_and_a_missing_mount() -> None:
    secret = ResolvedVolume("creds", "secret", {"p": b"x"}, True)
    pod = prepared(
        {"name": "a", "image": "busybox"},
        {"name": "b", "image": "busybox", "volumeMounts": [{"name": "creds", "mountPath": "/c"}]},
        volumes={"creds": secret},
        pod_volumes=[{"name": "creds", "secret": {"secretName": "s"}}],
    )
    with pytest.raises(InvalidPodError) as caught:
        task_request(pod, MappingOptions(multi_container="docker_wrapper"))
    assert caught.value.field == "spec.volumes[0]"
    missing = prepared(
        {"name": "a", "image": "busybox"},
        {"name": "b", "image": "busybox", "volumeMounts": [{"name": "nope", "mountPath": "/c"}]},
    )
    with pytest.raises(InvalidPodError) as caught:
        task_request(missing, MappingOptions(multi_container="docker_wrapper"))
    assert caught.value.field == "spec.containers[1].volumeMounts[0].name"

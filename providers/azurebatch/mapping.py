"""A pod as a Batch task (pure): the REST body of ``BatchTaskCreateOptions``.

**One container** runs as a container task: ``containerSettings.imageName`` is the image, the
pod's ``command`` becomes ``--entrypoint`` (its first word) in ``containerRunOptions`` and the rest
of ``command`` + ``args`` the ``commandLine`` (Batch hands the command line to ``docker create``
after the image; each word is POSIX-quoted, so spaces, quotes and ``$`` arrive unchanged). A pod
with neither keeps the image's entrypoint and command: the command line is empty.
``workingDir`` is ``--workdir``; ``nvidia.com/gpu: N`` is ``--gpus N``; the registry login that
matches the image's registry (from imagePullSecrets) is ``containerSettings.registry``
(``password`` is secret in the spec: Batch never returns it); ``activeDeadlineSeconds`` is
``constraints.maxWallClockTime``; restartPolicy Never is no retry, OnFailure/Always
``max_task_retry_count`` retries.

**Files** (configMap, secret, projected, downwardAPI volumes; emptyDir directories) and a command
line longer than Batch's 32,768 characters need a **bootstrap**: the container's entrypoint becomes
``/bin/sh``, and a short command line runs a script carried, base64-encoded, in environment
variables ``VK_OPERATOR_BOOT_<n>`` (chunks of :data:`ENV_CHUNK` characters; Linux allows 128 KiB
per variable). The script writes the files with their modes, creates the emptyDir mounts, and
``exec``\\s the pod's command. Nothing is truncated: a pod whose task would exceed Batch's 1 MiB
request limit is refused, naming what is big. The bootstrap needs ``/bin/sh`` and ``base64`` in
the image, and a pod ``command`` (the image's own entrypoint is not known here).

**Identity.** The task id is :func:`naming.task_id`; the environment carries the pod's namespace,
name and UID and the container's name and image (the task's only place for them), the display name
says ``namespace/name``.

**Several containers or init containers** run only with ``multi_container: docker_wrapper``: the
task (no containerSettings, as the pool's admin auto-user) runs a script that starts a pause
container, runs the init containers in order, then the app containers with ``--network
container:<pause>`` and ``--ipc container:<pause>``, each container's output in
``<container>.log`` in the task directory, and ends with the last non-zero exit code. The pod's
volumes are directories under ``vk-volumes/`` of the task's working directory, bind-mounted into
the containers that mount them (an emptyDir is shared, as on a kubelet). Otherwise such a pod is
refused with a permanent reason.

**Secrets.** Batch tasks have no secret settings: secret env vars and secret volume files would be
readable by anyone who can read the job. They are refused unless ``secrets: task_environment``; the
projected service-account token is left out unless ``mount_service_account_token``.
"""

from __future__ import annotations

import base64
import dataclasses
import posixpath
import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from providers.azurebatch import naming
from vk_operator.provider import (
    InvalidPodError,
    PermanentError,
    PreparedPod,
    RegistryCredential,
    ResolvedVolume,
    parse_quantity,
)

MAX_COMMAND_LINE = 32768
MAX_REQUEST_BYTES = 1024 * 1024
REQUEST_HEADROOM = 16 * 1024  # JSON punctuation and the rest of the body
ENV_CHUNK = 100_000
ENV_BOOT = "VK_OPERATOR_BOOT_"
GPU = "nvidia.com/gpu"
MULTI_CONTAINER_REASON = "MultiContainerPodUnsupported"
DOCKER_HUB = ("docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com")


@dataclasses.dataclass(frozen=True)
class MappingOptions:
    """What of the config the mapping needs."""

    multi_container: str = "refuse"
    secrets: str = "refuse"
    mount_service_account_token: bool = False
    max_task_retry_count: int = -1
    retention: str = "P1D"


@dataclasses.dataclass(frozen=True)
class TaskRequest:
    task_id: str
    body: dict[str, Any]  # BatchTaskCreateOptions as REST JSON
    bootstrapped: bool  # the command runs through the bootstrap script


def image_registry(image: str) -> str:
    """The registry host of an image reference (Docker Hub for ``busybox`` and ``library/x``)."""
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first.lower()
    return "docker.io"


def registry_for(image: str, credentials: Sequence[RegistryCredential]) -> RegistryCredential | None:
    host = image_registry(image)
    for credential in credentials:
        server = credential.server.lower()
        if server == host or (host == "docker.io" and server in DOCKER_HUB):
            return credential
    return None


def _is_token_volume(pod_volume: Mapping[str, Any]) -> bool:
    sources = (pod_volume.get("projected") or {}).get("sources") or []
    return any("serviceAccountToken" in s for s in sources)


def _gpus(container: Mapping[str, Any], field: str) -> int:
    resources = container.get("resources") or {}
    raw = (resources.get("limits") or {}).get(GPU) or (resources.get("requests") or {}).get(GPU)
    if raw is None:
        return 0
    try:
        value = parse_quantity(str(raw))
    except ValueError:
        raise InvalidPodError(f"{field}.resources.limits[{GPU}]", f"{raw!r} is not a quantity") from None
    if value != int(value) or value < 0:
        raise InvalidPodError(f"{field}.resources.limits[{GPU}]", "must be a whole number of GPUs")
    return int(value)


@dataclasses.dataclass
class _Files:
    """What the bootstrap writes: files (path -> bytes, mode) and directories."""

    files: dict[str, tuple[bytes, int | None]] = dataclasses.field(default_factory=dict)
    directories: list[str] = dataclasses.field(default_factory=list)


def _container_files(
    container: Mapping[str, Any],
    field: str,
    pod_volumes: Mapping[str, Mapping[str, Any]],
    volumes: Mapping[str, ResolvedVolume],
    options: MappingOptions,
) -> _Files:
    out = _Files()
    for i, mount in enumerate(container.get("volumeMounts") or []):
        name = mount.get("name", "")
        where = f"{field}.volumeMounts[{i}]"
        pod_volume = pod_volumes.get(name, {})
        if _is_token_volume(pod_volume) and not options.mount_service_account_token:
            continue
        volume = volumes.get(name)
        if volume is None:
            raise InvalidPodError(f"{where}.name", f"no volume {name!r} in spec.volumes")
        path = str(mount.get("mountPath", ""))
        if not path.startswith("/"):
            raise InvalidPodError(f"{where}.mountPath", f"{path!r} is not an absolute path")
        if volume.sensitive and options.secrets == "refuse":
            raise InvalidPodError(
                f"{where}.name",
                f"volume {name!r} holds secret data, and Batch tasks have no secret settings (the "
                "provider's `secrets: task_environment` delivers it in the task's environment)",
            )
        if volume.kind == "emptyDir":
            out.directories.append(posixpath.join(path, mount.get("subPath", "")).rstrip("/") or "/")
            continue
        if volume.kind not in ("configMap", "secret", "projected", "downwardAPI"):
            raise InvalidPodError(f"{where}.name", f"volume type {volume.kind!r} is not supported by Batch")
        sub = mount.get("subPath")
        if sub:
            if sub not in volume.files:
                raise InvalidPodError(f"{where}.subPath", f"{sub!r} is not a file of volume {name!r}")
            out.files[path] = (volume.files[sub], volume.modes.get(sub))
            continue
        out.directories.append(path)
        for rel, content in sorted(volume.files.items()):
            out.files[posixpath.join(path, rel)] = (content, volume.modes.get(rel))
    return out


def _file_lines(files: _Files) -> list[str]:
    """Shell lines writing ``files`` (base64 from coreutils), their modes, and the directories."""
    lines = []
    for directory in files.directories:
        lines.append(f"mkdir -p {shlex.quote(directory)}")
    for path, (content, mode) in sorted(files.files.items()):
        encoded = base64.b64encode(content).decode()
        lines.append(f"mkdir -p {shlex.quote(posixpath.dirname(path) or '/')}")
        lines.append(f"printf %s {shlex.quote(encoded)} | base64 -d > {shlex.quote(path)}")
        if mode is not None:
            lines.append(f"chmod {mode:o} {shlex.quote(path)}")
    return lines


def bootstrap_script(files: _Files, argv: Sequence[str]) -> str:
    """The shell script that writes ``files`` and then runs ``argv`` (POSIX sh)."""
    lines = ["set -e", *_file_lines(files), f"exec {shlex.join(argv)}" if argv else "exit 0"]
    return "\n".join(lines) + "\n"


def _boot_env(script: str) -> tuple[list[dict[str, str]], str]:
    """The script as env chunks, and the command line that decodes and runs them."""
    encoded = base64.b64encode(script.encode()).decode()
    chunks = [encoded[i : i + ENV_CHUNK] for i in range(0, len(encoded), ENV_CHUNK)] or [""]
    env = [{"name": f"{ENV_BOOT}{i}", "value": chunk} for i, chunk in enumerate(chunks)]
    joined = "".join(f"${{{ENV_BOOT}{i}}}" for i in range(len(chunks)))
    # mktemp: tasks of one node share its /tmp in the wrapper mode (a container has its own).
    command = f'boot=$(mktemp) && printf %s "{joined}" | base64 -d > "$boot" && exec /bin/sh "$boot"'
    return env, shlex.join(["-c", command])


def _env(
    container: Mapping[str, Any], field: str, secret_vars: frozenset[str], options: MappingOptions
) -> list[dict[str, str]]:
    out = []
    for i, item in enumerate(container.get("env") or []):
        name = str(item.get("name", ""))
        if not name or "=" in name:
            raise InvalidPodError(f"{field}.env[{i}].name", f"{name!r} is not an environment variable name")
        if name in naming.RESERVED_ENV or name.startswith(ENV_BOOT):
            raise InvalidPodError(f"{field}.env[{i}].name", f"{name} is reserved by the provider")
        if name in secret_vars and options.secrets == "refuse":
            raise InvalidPodError(
                f"{field}.env[{i}]",
                f"{name} comes from a Secret, and Batch tasks have no secret settings (the provider's "
                "`secrets: task_environment` delivers it in the task's environment)",
            )
        out.append({"name": name, "value": str(item.get("value", ""))})
    return out


def _constraints(spec: Mapping[str, Any], options: MappingOptions) -> dict[str, Any]:
    policy = spec.get("restartPolicy", "Always")
    constraints: dict[str, Any] = {
        "maxTaskRetryCount": 0 if policy == "Never" else options.max_task_retry_count,
        "retentionTime": options.retention,
    }
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None:
        if isinstance(deadline, bool) or not isinstance(deadline, int) or deadline <= 0:
            raise InvalidPodError("spec.activeDeadlineSeconds", "must be a positive whole number of seconds")
        constraints["maxWallClockTime"] = f"PT{deadline}S"
    return constraints


def _identity_env(prepared: PreparedPod, container: str, image: str) -> list[dict[str, str]]:
    ref = prepared.ref
    return [
        {"name": naming.ENV_NAMESPACE, "value": ref.namespace},
        {"name": naming.ENV_NAME, "value": ref.name},
        {"name": naming.ENV_UID, "value": ref.uid},
        {"name": naming.ENV_CONTAINER, "value": container},
        {"name": naming.ENV_IMAGE, "value": image},
    ]


def _check_size(body: Mapping[str, Any], what: str) -> None:
    size = sum(len(e["name"]) + len(e["value"]) for e in body.get("environmentSettings") or [])
    size += len(body.get("commandLine", ""))
    if size + REQUEST_HEADROOM > MAX_REQUEST_BYTES:
        raise InvalidPodError(
            what,
            f"the task would carry {size} bytes of command line, environment and files; a Batch request "
            f"takes at most {MAX_REQUEST_BYTES} (use an image or a volume type the pool mounts instead)",
        )


def task_request(prepared: PreparedPod, options: MappingOptions) -> TaskRequest:
    """The task for ``prepared`` (InvalidPodError/PermanentError for what Batch cannot run)."""
    pod = prepared.pod
    spec = pod.get("spec") or {}
    ref = prepared.ref
    containers = spec.get("containers") or []
    init_containers = spec.get("initContainers") or []
    if not containers:
        raise InvalidPodError("spec.containers", "a pod needs at least one container")
    if len(containers) > 1 or init_containers:
        if options.multi_container != "docker_wrapper":
            raise PermanentError(
                f"pod {ref.namespace}/{ref.name} has {len(containers)} containers and {len(init_containers)} "
                "init containers; a Batch container task runs one (the provider's `multi_container: "
                "docker_wrapper` runs them under the node's Docker)",
                reason=MULTI_CONTAINER_REASON,
            )
        return _wrapper_request(prepared, options)
    container = containers[0]
    field = "spec.containers[0]"
    image = str(container.get("image") or "")
    if not image:
        raise InvalidPodError(f"{field}.image", "a container needs an image")
    secret_vars = frozenset(var for c, var in prepared.secret_env if c == container.get("name"))
    pod_volumes = {v.get("name", ""): v for v in spec.get("volumes") or []}
    files = _container_files(container, field, pod_volumes, prepared.volumes, options)
    command = [str(x) for x in container.get("command") or []]
    args = [str(x) for x in container.get("args") or []]
    run_options: list[str] = []
    gpus = _gpus(container, field)
    if gpus:
        run_options += ["--gpus", str(gpus)]
    if container.get("workingDir"):
        run_options += ["--workdir", str(container["workingDir"])]
    env = _env(container, field, secret_vars, options)
    argv = command + args
    direct_line = shlex.join(argv[1:] if command else args)
    bootstrapped = bool(files.files or files.directories) or len(direct_line) > MAX_COMMAND_LINE
    if bootstrapped:
        if not command:
            raise InvalidPodError(
                f"{field}.command",
                "a pod with volume files or a command line over 32,768 characters needs `command` (the "
                "provider starts it after writing the files, and cannot know the image's entrypoint)",
            )
        boot_env, command_line = _boot_env(bootstrap_script(files, argv))
        env += boot_env
        run_options += ["--entrypoint", "/bin/sh"]
    else:
        command_line = direct_line
        if command:
            run_options += ["--entrypoint", command[0]]
    settings: dict[str, Any] = {
        "imageName": image,
        "workingDirectory": "containerImageDefault",
        "containerRunOptions": shlex.join(["--rm", *run_options]),
    }
    login = registry_for(image, prepared.registry_credentials)
    if login is not None:
        settings["registry"] = {
            "registryServer": login.server if "://" in login.server else f"https://{login.server}",  # a URI
            "username": login.username,
            "password": login.password,
        }
    body: dict[str, Any] = {
        "id": naming.task_id(ref.namespace, ref.name, ref.uid),
        "displayName": f"{ref.namespace}/{ref.name}"[:1024],
        "commandLine": command_line,
        "containerSettings": settings,
        "environmentSettings": [*_identity_env(prepared, str(container.get("name", "")), image), *env],
        "constraints": _constraints(spec, options),
        "userIdentity": {"autoUser": {"scope": "task", "elevationLevel": "nonadmin"}},
    }
    _check_size(body, f"{field}.command" if not files.files else "spec.volumes")
    return TaskRequest(body["id"], body, bootstrapped)


_SCRIPT_VARIABLES = re.compile(r"(\$VK_POD|\$VK_VOLUMES)")


def _sh_word(word: str) -> str:
    """``word`` quoted for sh, except the script's variables ``$VK_POD``/``$VK_VOLUMES``, expanded."""
    parts = _SCRIPT_VARIABLES.split(word)
    return "".join(
        f'"{part}"' if i % 2 else (shlex.quote(part) if part else "") for i, part in enumerate(parts)
    )


def _sh_join(argv: Sequence[str]) -> str:
    return " ".join(_sh_word(word) for word in argv)


def _docker_run(
    container: Mapping[str, Any],
    field: str,
    network: str,
    gpus: int,
    detach: bool,
    volumes: Mapping[str, str | None],
) -> list[str]:
    """``volumes``: pod volume name -> its directory under ``$VK_VOLUMES`` (None: left out)."""
    argv = ["docker", "run", "--name", f"$VK_POD-{container['name']}", f"--network=container:{network}"]
    argv += [f"--ipc=container:{network}"]
    for j, mount in enumerate(container.get("volumeMounts") or []):
        name = str(mount.get("name", ""))
        if name not in volumes:
            raise InvalidPodError(f"{field}.volumeMounts[{j}].name", f"no volume {name!r} in spec.volumes")
        host = volumes[name]
        if host is None:
            continue
        path = str(mount.get("mountPath", ""))
        if not path.startswith("/"):
            raise InvalidPodError(f"{field}.volumeMounts[{j}].mountPath", f"{path!r} is not an absolute path")
        sub = str(mount.get("subPath") or "")
        source = f"$VK_VOLUMES/{host}" + (f"/{sub}" if sub else "")
        argv += ["-v", f"{source}:{path}" + (":ro" if mount.get("readOnly") else "")]
    if detach:
        argv.append("-d")
    if gpus:
        argv += ["--gpus", str(gpus)]
    for item in container.get("env") or []:
        argv += ["-e", f"{item['name']}={item.get('value', '')}"]
    if container.get("workingDir"):
        argv += ["--workdir", str(container["workingDir"])]
    command = [str(x) for x in container.get("command") or []]
    if command:
        argv += ["--entrypoint", command[0]]
    image = str(container.get("image") or "")
    if not image:
        raise InvalidPodError(f"{field}.image", "a container needs an image")
    return [*argv, image, *(command[1:] if command else []), *[str(x) for x in container.get("args") or []]]


def _wrapper_volumes(prepared: PreparedPod, options: MappingOptions) -> tuple[_Files, dict[str, str | None]]:
    """The pod's volumes as directories under ``vk-volumes/`` of the task's working directory, shared by
    its containers (emptyDir as on a kubelet), with their files; the token volume may be left out."""
    files = _Files()
    volumes: dict[str, str | None] = {}
    for i, pod_volume in enumerate((prepared.pod.get("spec") or {}).get("volumes") or []):
        name = str(pod_volume.get("name", ""))
        if _is_token_volume(pod_volume) and not options.mount_service_account_token:
            volumes[name] = None
            continue
        volume = prepared.volumes.get(name)
        if volume is None:
            raise InvalidPodError(f"spec.volumes[{i}]", f"volume {name!r} was not resolved")
        if volume.sensitive and options.secrets == "refuse":
            raise InvalidPodError(
                f"spec.volumes[{i}]",
                f"volume {name!r} holds secret data, and Batch tasks have no secret settings (the "
                "provider's `secrets: task_environment` delivers it in the task's environment)",
            )
        if volume.kind not in ("emptyDir", "configMap", "secret", "projected", "downwardAPI"):
            raise InvalidPodError(
                f"spec.volumes[{i}]", f"volume type {volume.kind!r} is not supported by Batch"
            )
        directory = f"{len(volumes)}-{re.sub(r'[^A-Za-z0-9_.-]', '-', name)}"
        volumes[name] = directory
        files.directories.append(f"vk-volumes/{directory}")
        for rel, content in sorted(volume.files.items()):
            files.files[f"vk-volumes/{directory}/{rel}"] = (content, volume.modes.get(rel))
    return files, volumes


def _wrapper_request(prepared: PreparedPod, options: MappingOptions) -> TaskRequest:
    """Every container under the node's Docker, sharing a pause container's network (see the module)."""
    pod = prepared.pod
    spec = pod.get("spec") or {}
    ref = prepared.ref
    files, volumes = _wrapper_volumes(prepared, options)
    for kind in ("initContainers", "containers"):
        for i, container in enumerate(spec.get(kind) or []):
            secret_vars = frozenset(v for c, v in prepared.secret_env if c == container.get("name"))
            _env(container, f"spec.{kind}[{i}]", secret_vars, options)
    lines = [
        "set -u",
        f"VK_POD={shlex.quote(naming.task_id(ref.namespace, ref.name, ref.uid))}",
        'VK_VOLUMES="$PWD/vk-volumes"',
        "set -e",
        *_file_lines(files),
        "set +e",
        "LOGS=${AZ_BATCH_TASK_DIR:-.}",
        'cleanup() { docker rm -f $(docker ps -aq --filter "name=^$VK_POD-") >/dev/null 2>&1; }',
        "trap cleanup EXIT",
        'docker run -d --ipc=shareable --name "$VK_POD-pause" registry.k8s.io/pause:3.10 >/dev/null'
        " || exit 125",
        "status=0",
    ]
    for i, container in enumerate(spec.get("initContainers") or []):
        argv = _docker_run(container, f"spec.initContainers[{i}]", "$VK_POD-pause", 0, False, volumes)
        name = container["name"]
        lines.append(f'{_sh_join(argv)} > "$LOGS/{name}.log" 2>&1 || exit $?')
    names = []
    for i, container in enumerate(spec.get("containers") or []):
        field = f"spec.containers[{i}]"
        argv = _docker_run(container, field, "$VK_POD-pause", _gpus(container, field), True, volumes)
        name = container["name"]
        names.append(name)
        lines.append(f"{_sh_join(argv)} >/dev/null || exit 125")
        lines.append(f'docker logs -f "$VK_POD-{name}" > "$LOGS/{name}.log" 2>&1 &')
    for name in names:
        lines.append(f'code=$(docker wait "$VK_POD-{name}"); [ "$code" = 0 ] || status=$code')
    lines.append("wait")
    lines.append("exit $status")
    script = "\n".join(lines) + "\n"
    boot_env, command_line = _boot_env(script)
    first = (spec.get("containers") or [{}])[0]
    body: dict[str, Any] = {
        "id": naming.task_id(ref.namespace, ref.name, ref.uid),
        "displayName": f"{ref.namespace}/{ref.name}"[:1024],
        "commandLine": "/bin/sh " + command_line,
        "environmentSettings": [
            *_identity_env(prepared, ",".join(names), str(first.get("image", ""))),
            *boot_env,
        ],
        "constraints": _constraints(spec, options),
        "userIdentity": {"autoUser": {"scope": "pool", "elevationLevel": "admin"}},
    }
    _check_size(body, "spec.containers")
    return TaskRequest(body["id"], body, True)

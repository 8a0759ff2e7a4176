"""A pod as an ECS task definition and a RunTask request: pure, table-tested.

- command -> ``entryPoint``, args -> ``command`` (Kubernetes' names, Docker's meaning);
- env -> ``environment``; a value that came from a Kubernetes Secret (``PreparedPod.secret_env``)
  never goes into the task definition: it goes into the pod's Secrets Manager entry (a JSON object,
  one key per variable) and the container's ``secrets`` references it (``valueFrom`` =
  ``<secret ARN>:<key>::``);
- CPU/memory -> the smallest Fargate size that fits the pod (max of the app containers' sum and the
  largest init container; a limit counts over a request); a pod that fits none is refused;
- ports -> ``portMappings``; awslogs -> the configured group, region and stream prefix;
- containers are essential, init containers are not, and run first: each init container depends on
  the previous one's SUCCESS, every app container on the last one's;
- imagePullSecrets -> ``repositoryCredentials`` of the containers pulling from that registry (the
  login in a Secrets Manager entry of the pod's);
- emptyDir -> a task volume; an EFS CSI volume (``csi:efs.csi.aws.com``) -> an EFS task volume;
- the service-account token volume is skipped with a warning (tasks get no Kubernetes API
  credentials); other configMap/secret/projected/downwardAPI volumes are task volumes written by the
  provider's init container ``vk-files`` (config ``file_volumes``; secret files from the pod's secret),
  or refused naming the volume without that config;
- exec probes -> the container's ECS ``healthCheck`` (liveness first, else readiness); other
  probes are warnings (posted as Warning Events by the provider).

**Shared task definitions.** The task definition of a pod is a function of its template (not its
name or UID), so the replicas of a Deployment produce the same request: it is registered once, in a
family named by its content hash (:func:`naming.family`). A pod with Secret-valued env references
its own Secrets Manager entry (an ARN per pod), so its task definition is its own: see
``docs/fargate.md`` for why the secret values are not shared by content.
"""

from __future__ import annotations

import base64
import dataclasses
import math
import posixpath
import shlex
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

from providers.fargate import naming
from providers.fargate.config import FargateConfig
from providers.fargate.sizes import LARGEST, TaskSize, smallest_fitting
from vk_operator.provider import InvalidPodError, PreparedPod, parse_quantity

EFS_DRIVER = "efs.csi.aws.com"
FILE_KINDS = ("configMap", "secret", "projected", "downwardAPI")
FILES_MEMORY_MIB = 32  # the file-writing init container's memory limit
VOLUME_TYPES = frozenset({f"csi:{EFS_DRIVER}"})
MIB = 1024 * 1024
MIN_CONTAINER_MEMORY = 6  # MiB: ECS refuses less
DEFAULT_CPU_UNITS = 256  # a pod that requests nothing gets the smallest Fargate size
DEFAULT_MEMORY_MIB = 512
# ECS health check bounds (seconds, retries)
HEALTH_INTERVAL = (5, 300)
HEALTH_TIMEOUT = (2, 120)
HEALTH_RETRIES = (1, 10)
HEALTH_START = (0, 300)


@dataclasses.dataclass(frozen=True)
class MappingWarning:
    """Something of the pod Fargate does not do; posted as a Warning Event (``reason``, ``str``)."""

    field: str
    reason: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclasses.dataclass(frozen=True)
class TaskPlan:
    """What creating a pod's task needs: the task definition, the secret values, the run request."""

    task_definition: dict[str, Any]  # RegisterTaskDefinition's body, without family and tags
    digest: str  # its content hash
    family: str
    size: TaskSize
    init_containers: tuple[str, ...]
    warnings: tuple[MappingWarning, ...]


def _warn(warnings: list[MappingWarning], field: str, reason: str, message: str) -> None:
    warnings.append(MappingWarning(field, reason, message))


def secret_key(container: str, index: int) -> str:
    """The key of a container's env variable (by position) in the pod's secret JSON object."""
    return f"{container}.{index}"


def file_key(index: int) -> str:
    """The key of a secret file (by its position in :func:`volume_files`) in the pod's secret."""
    return f"file.{index}"


def volume_files(prepared: PreparedPod) -> list[tuple[str, str, bytes, int, bool]]:
    """(volume, path, content, mode, secret) of every file of the pod's file volumes, in order."""
    files = []
    for volume in (prepared.pod.get("spec") or {}).get("volumes") or []:
        resolved = prepared.volumes.get(str(volume.get("name")))
        if resolved is None or resolved.kind not in FILE_KINDS or _is_service_account_volume(volume):
            continue
        for path, content in sorted(resolved.files.items()):
            mode = resolved.modes.get(path, 0o644)
            files.append((resolved.name, path, content, mode, resolved.sensitive))
    return files


def secret_values(prepared: PreparedPod, with_files: bool = False) -> dict[str, str]:
    """The Secret-valued env variables of every container, keyed by :func:`secret_key`, and with
    ``with_files`` the secret volume files (base64), keyed by :func:`file_key`."""
    values: dict[str, str] = {}
    if with_files:
        for index, (_, _, content, _, secret) in enumerate(volume_files(prepared)):
            if secret:
                values[file_key(index)] = base64.b64encode(content).decode()
    spec = prepared.pod.get("spec") or {}
    for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        name = str(container.get("name"))
        for index, variable in enumerate(container.get("env") or []):
            if (name, str(variable.get("name"))) in prepared.secret_env:
                values[secret_key(name, index)] = str(variable.get("value") or "")
    return values


def _quantity(value: Any, field: str) -> Fraction:
    try:
        quantity = parse_quantity(str(value))
    except (ValueError, ZeroDivisionError):
        raise InvalidPodError(field, f"{value!r} is not a quantity") from None
    if quantity < 0:
        raise InvalidPodError(field, f"{value!r} is negative")
    return quantity


def container_need(container: Mapping[str, Any], field: str) -> tuple[Fraction, Fraction]:
    """(cores, bytes) a container needs: its limit where set, else its request, else 0."""
    resources = container.get("resources") or {}
    need = []
    for resource in ("cpu", "memory"):
        value = (resources.get("limits") or {}).get(resource)
        kind = "limits"
        if value is None:
            value, kind = (resources.get("requests") or {}).get(resource), "requests"
        need.append(
            _quantity(value, f"{field}.resources.{kind}.{resource}") if value is not None else Fraction(0)
        )
    return need[0], need[1]


def task_size(pod: Mapping[str, Any]) -> TaskSize:
    """The smallest Fargate size that fits the pod (InvalidPodError when none does)."""
    spec = pod.get("spec") or {}
    app = [container_need(c, f"spec.containers[{i}]") for i, c in enumerate(spec.get("containers") or [])]
    init = [
        container_need(c, f"spec.initContainers[{i}]") for i, c in enumerate(spec.get("initContainers") or [])
    ]
    cores = max([sum((c for c, _ in app), Fraction(0)), *(c for c, _ in init)])
    memory = max([sum((m for _, m in app), Fraction(0)), *(m for _, m in init)])
    cpu_units = max(float(cores * 1024), 0.0)
    memory_mib = max(float(memory / MIB), 0.0)
    size = smallest_fitting(max(cpu_units, 1.0), max(memory_mib, 1.0))
    if size is None:
        raise InvalidPodError(
            "spec.containers[*].resources",
            f"the pod needs {float(cores):g} vCPU and {memory_mib / 1024:g} GiB; the largest Fargate task "
            f"is {LARGEST} (and each CPU size allows only some memory sizes)",
        )
    return size


def _container_memory(containers: Sequence[tuple[str, Fraction]], task_memory: int) -> dict[str, int]:
    """Each container's hard memory limit (MiB): its own when it has one, else an equal share of
    what the others leave (ECS needs one per container on Fargate when moto runs it, and it bounds
    a container that would otherwise take the whole task)."""
    fixed = {
        name: max(math.ceil(memory / MIB), MIN_CONTAINER_MEMORY) for name, memory in containers if memory
    }
    rest = [name for name, memory in containers if not memory]
    left = task_memory - sum(fixed.values())
    share = max(left // len(rest), MIN_CONTAINER_MEMORY) if rest else 0
    return {**fixed, **dict.fromkeys(rest, share)}


def _clamp(value: Any, bounds: tuple[int, int], default: int) -> int:
    number = int(value) if isinstance(value, int | float) else default
    return min(max(number, bounds[0]), bounds[1])


def health_check(
    container: Mapping[str, Any], field: str, warnings: list[MappingWarning]
) -> dict[str, Any] | None:
    """The ECS health check of a container's exec probe (liveness first, else readiness)."""
    check: dict[str, Any] | None = None
    for kind in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = container.get(kind)
        if not probe:
            continue
        where = f"{field}.{kind}"
        exec_action = probe.get("exec")
        if kind == "startupProbe":
            _warn(warnings, where, "ProbeNotSupported", "Fargate has no startup probes: ignored")
            continue
        if exec_action is None:
            handler = next(
                (k for k in ("httpGet", "tcpSocket", "grpc") if probe.get(k) is not None), "handler"
            )
            _warn(
                warnings,
                where,
                "ProbeNotSupported",
                f"ECS health checks run commands only: the {handler} probe is ignored",
            )
            continue
        if check is not None:
            _warn(warnings, where, "ProbeNotSupported", "ECS has one health check per container: ignored")
            continue
        command = [str(part) for part in exec_action.get("command") or []]
        if not command:
            raise InvalidPodError(f"{where}.exec.command", "an exec probe needs a command")
        check = {
            "command": ["CMD", *command],
            "interval": _clamp(probe.get("periodSeconds"), HEALTH_INTERVAL, 10),
            "timeout": _clamp(probe.get("timeoutSeconds"), HEALTH_TIMEOUT, 2),
            "retries": _clamp(probe.get("failureThreshold"), HEALTH_RETRIES, 3),
            "startPeriod": _clamp(probe.get("initialDelaySeconds"), HEALTH_START, 0),
        }
        if kind == "readinessProbe":
            _warn(
                warnings,
                where,
                "ProbeMapped",
                "ECS has no readiness checks: the readiness probe is the container's health check",
            )
    return check


def port_mappings(container: Mapping[str, Any], field: str) -> list[dict[str, Any]]:
    mappings = []
    for i, port in enumerate(container.get("ports") or []):
        where = f"{field}.ports[{i}]"
        number = port.get("containerPort")
        if not isinstance(number, int) or not 1 <= number <= 65535:
            raise InvalidPodError(f"{where}.containerPort", f"{number!r} is not a port")
        protocol = str(port.get("protocol") or "TCP").lower()
        if protocol not in ("tcp", "udp"):
            raise InvalidPodError(f"{where}.protocol", f"ECS supports TCP and UDP, not {protocol.upper()}")
        host = port.get("hostPort")
        if host not in (None, 0, number):
            raise InvalidPodError(f"{where}.hostPort", "awsvpc tasks need hostPort equal to containerPort")
        mappings.append({"containerPort": number, "protocol": protocol})
    return mappings


def _volumes(
    prepared: PreparedPod, warnings: list[MappingWarning], file_volumes: bool
) -> tuple[list[dict[str, Any]], set[str]]:
    """The task volumes, and the pod volumes that are not mounted (skipped with a warning)."""
    volumes: list[dict[str, Any]] = []
    skipped: set[str] = set()
    for i, volume in enumerate((prepared.pod.get("spec") or {}).get("volumes") or []):
        name, field = str(volume.get("name")), f"spec.volumes[{i}]"
        resolved = prepared.volumes.get(name)
        if resolved is None:
            raise InvalidPodError(field, f"volume {name!r} was not prepared")
        if resolved.kind == "emptyDir":
            if resolved.medium == "Memory":
                _warn(warnings, field, "VolumeMediumNotSupported", "Fargate has no tmpfs volumes: on disk")
            volumes.append({"name": name})
        elif resolved.kind == "csi":
            volumes.append({"name": name, "efsVolumeConfiguration": efs_volume(resolved.source, field)})
        elif _is_service_account_volume(volume):
            skipped.add(name)
            _warn(
                warnings,
                field,
                "ServiceAccountTokenNotMounted",
                f"volume {name!r}: Fargate tasks get no Kubernetes API credentials (no token mounted)",
            )
        elif file_volumes:
            volumes.append({"name": name})  # written by the file-writing init container
        else:
            raise InvalidPodError(
                field,
                f"volume {name!r} ({resolved.kind}): files of configMap, secret, projected and "
                "downwardAPI volumes need the provider's file_volumes config (see docs/fargate.md)",
            )
    return volumes, skipped


def _is_service_account_volume(volume: Mapping[str, Any]) -> bool:
    sources = (volume.get("projected") or {}).get("sources") or []
    return any(source.get("serviceAccountToken") is not None for source in sources)


def efs_volume(source: Mapping[str, Any], field: str) -> dict[str, Any]:
    """The EFS CSI driver's ``volumeHandle`` (``fs-id[:path[:access-point]]``) as ECS's EFS config."""
    handle = str(
        source.get("volumeHandle") or (source.get("volumeAttributes") or {}).get("volumeHandle") or ""
    )
    parts = handle.split(":")
    if not parts[0].startswith("fs-"):
        raise InvalidPodError(f"{field}.csi.volumeAttributes.volumeHandle", "needs fs-ID[:PATH[:fsap-ID]]")
    config: dict[str, Any] = {"fileSystemId": parts[0], "transitEncryption": "ENABLED"}
    if len(parts) > 1 and parts[1]:
        config["rootDirectory"] = parts[1]
    if len(parts) > 2 and parts[2]:
        config["authorizationConfig"] = {"accessPointId": parts[2], "iam": "ENABLED"}
        config.pop("rootDirectory", None)  # ECS: the access point's root applies
    return config


def _mount_points(
    container: Mapping[str, Any], field: str, known: set[str], skipped: set[str]
) -> list[dict[str, Any]]:
    mounts = []
    for i, mount in enumerate(container.get("volumeMounts") or []):
        name = str(mount.get("name"))
        if name in skipped:
            continue
        if name not in known:
            raise InvalidPodError(f"{field}.volumeMounts[{i}].name", f"no volume {name!r}")
        if mount.get("subPath") or mount.get("subPathExpr"):
            raise InvalidPodError(f"{field}.volumeMounts[{i}].subPath", "ECS mounts whole volumes only")
        mounts.append(
            {
                "sourceVolume": name,
                "containerPath": str(mount.get("mountPath")),
                "readOnly": bool(mount.get("readOnly", False)),
            }
        )
    return mounts


def container_definition(
    container: Mapping[str, Any],
    field: str,
    prepared: PreparedPod,
    config: FargateConfig,
    secret_arn: str | None,
    warnings: list[MappingWarning],
) -> dict[str, Any]:
    name = str(container.get("name"))
    image = container.get("image")
    if not image:
        raise InvalidPodError(f"{field}.image", "a container needs an image")
    definition: dict[str, Any] = {"name": name, "image": str(image)}
    if container.get("command"):
        definition["entryPoint"] = [str(part) for part in container["command"]]
    if container.get("args"):
        definition["command"] = [str(part) for part in container["args"]]
    if container.get("workingDir"):
        definition["workingDirectory"] = str(container["workingDir"])
    environment, secrets = [], []
    for index, variable in enumerate(container.get("env") or []):
        var = str(variable.get("name"))
        if (name, var) in prepared.secret_env:
            if secret_arn is None:
                raise InvalidPodError(
                    f"{field}.env[{index}]", "a Secret-valued variable needs the pod's secret"
                )
            secrets.append({"name": var, "valueFrom": f"{secret_arn}:{secret_key(name, index)}::"})
        else:
            environment.append({"name": var, "value": str(variable.get("value") or "")})
    definition["environment"] = environment
    if secrets:
        definition["secrets"] = secrets
    ports = port_mappings(container, field)
    if ports:
        definition["portMappings"] = ports
    cores, _ = container_need(container, field)
    if cores:
        definition["cpu"] = max(int(cores * 1024), 1)
    if container.get("stdin") or container.get("tty"):
        definition["interactive"] = bool(container.get("stdin"))
        definition["pseudoTerminal"] = bool(container.get("tty"))
    security = container.get("securityContext") or {}
    if security.get("privileged"):
        raise InvalidPodError(f"{field}.securityContext.privileged", "Fargate runs no privileged containers")
    if security.get("readOnlyRootFilesystem"):
        definition["readonlyRootFilesystem"] = True
    if security.get("runAsUser") is not None:
        group = security.get("runAsGroup")
        definition["user"] = f"{security['runAsUser']}" + (f":{group}" if group is not None else "")
    definition["logConfiguration"] = {
        "logDriver": "awslogs",
        "options": {
            "awslogs-group": config.log_group,
            "awslogs-region": config.region,
            "awslogs-stream-prefix": config.log_stream_prefix,
        },
    }
    return definition


def task_plan(
    prepared: PreparedPod,
    config: FargateConfig,
    node: str,
    secret_arn: str | None,
    registry_arns: Mapping[str, str] | None = None,
) -> TaskPlan:
    """The pod's task definition (see the module docstring); InvalidPodError names what cannot be run."""
    pod = prepared.pod
    spec = pod.get("spec") or {}
    registry_arns = registry_arns or {}
    warnings: list[MappingWarning] = []
    containers = list(spec.get("containers") or [])
    inits = list(spec.get("initContainers") or [])
    if not containers:
        raise InvalidPodError("spec.containers", "a pod needs a container")
    if spec.get("hostNetwork"):
        raise InvalidPodError("spec.hostNetwork", "Fargate tasks have their own network interface (awsvpc)")
    size = task_size(pod)
    volumes, skipped = _volumes(prepared, warnings, config.file_volumes is not None)
    known = {v["name"] for v in volumes}
    definitions: list[dict[str, Any]] = []
    init_names = [str(c.get("name")) for c in inits]
    if naming.FILES_CONTAINER in init_names + [str(c.get("name")) for c in containers]:
        raise InvalidPodError("spec.containers", f"the container name {naming.FILES_CONTAINER} is reserved")
    files = volume_files(prepared) if config.file_volumes is not None else []
    if files:
        definitions.append(files_container(files, config, secret_arn))
        init_names.insert(0, naming.FILES_CONTAINER)
    offset = 1 if files else 0
    for i, container in enumerate(inits):
        field = f"spec.initContainers[{i}]"
        definition = container_definition(container, field, prepared, config, secret_arn, warnings)
        definition["essential"] = False
        if i + offset:
            definition["dependsOn"] = [{"containerName": init_names[i + offset - 1], "condition": "SUCCESS"}]
        definition["mountPoints"] = _mount_points(container, field, known, skipped)
        if container.get("restartPolicy") == "Always":
            _warn(
                warnings,
                field,
                "SidecarNotSupported",
                "native sidecars run as init containers that must exit",
            )
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            if container.get(probe):
                _warn(warnings, f"{field}.{probe}", "ProbeNotSupported", "init container probes are ignored")
        definitions.append(definition)
    for i, container in enumerate(containers):
        field = f"spec.containers[{i}]"
        definition = container_definition(container, field, prepared, config, secret_arn, warnings)
        definition["essential"] = True
        if init_names:
            definition["dependsOn"] = [{"containerName": init_names[-1], "condition": "SUCCESS"}]
        definition["mountPoints"] = _mount_points(container, field, known, skipped)
        check = health_check(container, field, warnings)
        if check is not None:
            definition["healthCheck"] = check
        definitions.append(definition)
    memory = _container_memory(
        [
            (str(c.get("name")), container_need(c, f"spec.containers[{i}]")[1])
            for i, c in enumerate(inits + containers)
        ],
        size.memory,
    )
    memory[naming.FILES_CONTAINER] = FILES_MEMORY_MIB
    for definition in definitions:
        definition["memory"] = memory[definition["name"]]
    body: dict[str, Any] = {
        "requiresCompatibilities": ["FARGATE"],
        "networkMode": "awsvpc",
        "cpu": str(size.cpu),
        "memory": str(size.memory),
        "containerDefinitions": definitions,
        "volumes": volumes,
    }
    if config.execution_role_arn:
        body["executionRoleArn"] = config.execution_role_arn
    if config.task_role_arn:
        body["taskRoleArn"] = config.task_role_arn
    for definition in definitions:
        arn = registry_arns.get(image_registry(str(definition["image"])))
        if arn is not None:
            definition["repositoryCredentials"] = {"credentialsParameter": arn}
    # per node and cluster: each deregisters its own (task definitions are account-wide)
    digest = naming.content_hash({"node": node, "cluster": config.cluster_name, **body})
    pod_inits = tuple(name for name in init_names if name != naming.FILES_CONTAINER)
    init_tag = ",".join(pod_inits)
    if len(init_tag) > naming.MAX_VALUE:
        raise InvalidPodError("spec.initContainers", "the init container names take more than 256 characters")
    return TaskPlan(body, digest, naming.family(node, digest), size, pod_inits, tuple(warnings))


DOCKER_HUB = "docker.io"
_DOCKER_HUB_ALIASES = ("docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com")


def registry_server(server: str) -> str:
    """A registry as a pull secret names it, normalised (Docker Hub has several names)."""
    host = server.lower().removeprefix("https://").removeprefix("http://").split("/", 1)[0]
    return DOCKER_HUB if host in _DOCKER_HUB_ALIASES else host


def image_registry(image: str) -> str:
    """The registry an image reference pulls from (``nginx`` and ``library/nginx``: Docker Hub)."""
    first, slash, _ = image.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return registry_server(first)
    return DOCKER_HUB


def files_container(
    files: Sequence[tuple[str, str, bytes, int, bool]], config: FargateConfig, secret_arn: str | None
) -> dict[str, Any]:
    """The init container writing the file volumes: each file's content (base64) in a variable,
    from the environment, or from the pod's secret for secret files."""
    assert config.file_volumes is not None
    script = ["set -e"]
    environment, secrets = [], []
    for index, (volume, path, content, mode, secret) in enumerate(files):
        variable = f"VK_FILE_{index}"
        target = posixpath.join(naming.FILES_ROOT, volume, path)
        script.append(f"mkdir -p {shlex.quote(posixpath.dirname(target))}")
        script.append(f'printf %s "${variable}" | base64 -d > {shlex.quote(target)}')
        script.append(f"chmod {mode:o} {shlex.quote(target)}")
        if secret:
            if secret_arn is None:
                raise InvalidPodError(f"spec.volumes[{volume}]", "a secret volume needs the pod's secret")
            secrets.append({"name": variable, "valueFrom": f"{secret_arn}:{file_key(index)}::"})
        else:
            environment.append({"name": variable, "value": base64.b64encode(content).decode()})
    volumes = sorted({volume for volume, *_ in files})
    definition: dict[str, Any] = {
        "name": naming.FILES_CONTAINER,
        "image": config.file_volumes.init_image,
        "essential": False,
        "entryPoint": ["sh", "-c"],
        "command": ["\n".join(script)],
        "environment": environment,
        "mountPoints": [
            {"sourceVolume": v, "containerPath": posixpath.join(naming.FILES_ROOT, v), "readOnly": False}
            for v in volumes
        ],
        "logConfiguration": {
            "logDriver": "awslogs",
            "options": {
                "awslogs-group": config.log_group,
                "awslogs-region": config.region,
                "awslogs-stream-prefix": config.log_stream_prefix,
            },
        },
    }
    if secrets:
        definition["secrets"] = secrets
    return definition


def run_task_request(
    prepared: PreparedPod, plan: TaskPlan, task_definition_arn: str, config: FargateConfig, node: str
) -> dict[str, Any]:
    """RunTask's body: launch type, awsvpc network, ownership tags, startedBy = the pod UID."""
    ref = prepared.ref
    tags = {
        **config.tags,
        naming.TAG_NODE: node,
        naming.TAG_NAMESPACE: ref.namespace,
        naming.TAG_NAME: ref.name,
        naming.TAG_UID: ref.uid,
    }
    if plan.init_containers:
        tags[naming.TAG_INIT] = ",".join(plan.init_containers)
    return {
        "cluster": config.cluster,
        "taskDefinition": task_definition_arn,
        "launchType": "FARGATE",
        "platformVersion": config.platform_version,
        "count": 1,
        "startedBy": ref.uid,
        # ECS's idempotency token: a RunTask botocore retries (a timeout, a 5xx) starts no second task
        "clientToken": ref.uid,
        "networkConfiguration": {
            "awsvpcConfiguration": {
                "subnets": list(config.subnets),
                "securityGroups": list(config.security_groups),
                "assignPublicIp": "ENABLED" if config.assign_public_ip else "DISABLED",
            }
        },
        "tags": naming.tag_list(tags),
        "enableECSManagedTags": True,
    }

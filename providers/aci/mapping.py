"""A prepared pod as an ACI container group (pure: no I/O, no clock).

:func:`container_group` builds the SDK's ``ContainerGroup`` (what ``begin_create_or_update`` sends)
and the Warnings to post as Events for what ACI cannot express but the pod can live without. What it
cannot live without raises :class:`InvalidPodError` naming the field (the pod fails), and a missing
Azure Files secret raises :class:`TransientError` with reason ``FailedMount`` (the pod waits).
Each aspect has its own function, table-tested in ``tests/aci/test_mapping.py``.

Decisions, where ACI differs from a kubelet:

- **Command.** ACI has one ``command`` (the whole argv) and cannot keep the image's entrypoint:
  ``command + args`` is sent, and ``args`` without ``command`` is an InvalidPodError.
- **Resources.** Requests and limits in cores and decimal GB, rounded *up* (a container gets at
  least what it asked for): CPU to 0.01 core, memory to 0.1 GB (azure-aci rounds down, so 128Mi
  became 0.1 GB). Unset requests take the config's defaults (1 core, 1.5 GB), or the limit when
  only that is set (the API server's defaulting). Limits are sent only for what the pod limits.
  ``nvidia.com/gpu`` (limits, else requests) becomes a ``GpuResource`` (Linux only) with the SKU
  of the pod's ``gpu_sku_annotation`` or the config's ``gpu_sku``. Other resources
  (ephemeral-storage...) have no ACI equivalent and are left out.
- **Secret-like volumes** (secret, configMap, projected, downwardAPI) are ACI ``secret`` volumes,
  which are flat (file name -> base64 content). The resolved files keep their ``items``/``path``
  layout this way: the files of each directory of the volume go to one ACI volume (the root's
  keeps the pod volume's name, a sub-directory's is ``<name>-<hash of name/dir>``), and a container
  mount of the pod volume becomes one ACI mount per directory (``mountPath/dir``), parents first.
  When a volume has files both in a directory and below it, the deeper mount lies inside the
  shallower one, and ACI must create its mount point inside a secret volume; volumes with files in
  one directory only (the usual case, and the service-account token) have no nesting. A volume
  with no files (an optional source that is missing) is an ``emptyDir``. ACI secret files have no
  modes: files asked with another mode than 0644 get a Warning (an executable script will not be).
- **subPath/subPathExpr** cannot be expressed (ACI mounts whole volumes): InvalidPodError.
- **Windows** groups have no volumes in ACI: the service-account token volume is left out with a
  Warning (as azure-aci does), any other volume is an InvalidPodError.
- **Probes**: exec and httpGet map; tcpSocket, grpc and startupProbe get a Warning naming the
  container and probe (the container is then ready when it runs), never a silent drop.
- **Networking**: container ports become the group's ports. With subnets in the config the group
  joins them with a private IP (when it has ports); otherwise a group with ports gets a public IP,
  with the DNS name label of the pod's ``dns_name_label_annotation``.
- **DNS** follows the kubelet: ``ClusterFirst`` gets the config's cluster DNS and searches, then
  the pod's ``dnsConfig``; ``Default`` uses ACI's resolver unless the pod adds nameservers;
  ``None`` uses the pod's alone. Limits as the kubelet (3 nameservers, 32 searches, 2048 characters),
  with its ``DNSConfigForming`` and ``MissingClusterDNS`` Warnings.

- **Registry logins** are the core's ``PreparedPod.registry_credentials`` (from the pod's
  ``imagePullSecrets``) as ``imageRegistryCredentials``, one per server (the password is a secret:
  ARM never returns it, and it is in no log or Event).
- **Azure Files**: an in-tree ``azureFile`` volume (``shareName``, ``secretName``, ``readOnly``) or
  a CSI ``file.csi.azure.com`` one (``volumeAttributes.shareName``, the Secret in
  ``nodePublishSecretRef``, ``readOnly``) is an ACI ``azureFile`` volume whose storage account name
  and key come from that Secret, which the core reads (``ResolvedVolume.secret``: keys
  ``azurestorageaccountname`` and ``azurestorageaccountkey``, as the Azure Files drivers use). A
  Secret without them is a TransientError ``FailedMount`` (the pod waits for it to be fixed). A CSI
  volume naming its Secret only in ``volumeAttributes.secretName`` (or another namespace's, in
  ``secretNamespace``) is an InvalidPodError: the core reads the Secret of
  ``nodePublishSecretRef``, in the pod's namespace, and the key cannot be had otherwise.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import math
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from fractions import Fraction
from typing import Any

from azure.mgmt.containerinstance.models import (
    AzureFileVolume,
    ConfidentialComputeProperties,
    Container,
    ContainerExec,
    ContainerGroup,
    ContainerGroupSubnetId,
    ContainerHttpGet,
    ContainerPort,
    ContainerProbe,
    DnsConfiguration,
    EnvironmentVariable,
    GitRepoVolume,
    GpuResource,
    HttpHeader,
    ImageRegistryCredential,
    InitContainerDefinition,
    IpAddress,
    Port,
    ResourceLimits,
    ResourceRequests,
    ResourceRequirements,
    Volume,
    VolumeMount,
)

from providers.aci import naming
from providers.aci.config import AciConfig
from vk_operator.provider import (
    InvalidPodError,
    PreparedPod,
    RegistryCredential,
    ResolvedVolume,
    TransientError,
    parse_quantity,
)

# The volume types the provider mounts itself (its `volume_types`): the core passes them unresolved.
AZURE_FILE_DRIVER = "file.csi.azure.com"
VOLUME_TYPES = frozenset({"azureFile", f"csi:{AZURE_FILE_DRIVER}", "gitRepo"})
SECRET_KINDS = frozenset({"secret", "configMap", "projected", "downwardAPI"})
GPU_RESOURCE = "nvidia.com/gpu"
DEFAULT_FILE_MODE = 0o644
STORAGE_ACCOUNT_NAME_KEY = "azurestorageaccountname"  # the keys azure-aci and the Azure Files drivers use
STORAGE_ACCOUNT_KEY_KEY = "azurestorageaccountkey"
FAILED_MOUNT = "FailedMount"
SKUS = {"standard": "Standard", "dedicated": "Dedicated", "confidential": "Confidential"}
GPU_SKUS = ("K80", "P100", "V100")  # the spec's enum (modelAsString: ACI may accept others)

# The kubelet's limits (pkg/kubelet/network/dns) and its Event reasons.
MAX_NAMESERVERS = 3
MAX_SEARCHES = 32
MAX_SEARCH_CHARS = 2048
DNS_CONFIG_FORMING = "DNSConfigForming"
MISSING_CLUSTER_DNS = "MissingClusterDNS"

# Our Warning reasons.
UNSUPPORTED_PROBE = "UnsupportedProbe"
UNSUPPORTED_FIELD = "UnsupportedField"
UNSUPPORTED_FILE_MODE = "UnsupportedFileMode"
UNSUPPORTED_VOLUME = "UnsupportedVolume"


@dataclasses.dataclass(frozen=True)
class MappingWarning:
    """Something of the pod ACI does not do, posted as a Warning Event (``reason``, ``str(self)``)."""

    field: str  # the pod field, as InvalidPodError names them: spec.containers[0].livenessProbe
    reason: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def _invalid(field: str, message: str) -> InvalidPodError:
    return InvalidPodError(field, message)


def _warn(warnings: list[MappingWarning], field: str, reason: str, message: str) -> None:
    warnings.append(MappingWarning(field, reason, message))


# --- containers ------------------------------------------------------------------------------------


def command(container: Mapping[str, Any], field: str) -> list[str] | None:
    """ACI's argv: ``command + args``; None keeps the image's (neither set)."""
    cmd = [str(part) for part in container.get("command") or []]
    args = [str(part) for part in container.get("args") or []]
    if args and not cmd:
        raise _invalid(
            f"{field}.args",
            "ACI needs the command to pass arguments (it cannot keep the image's entrypoint): "
            "set command to the image's entrypoint too",
        )
    return cmd + args or None


def environment(
    container: Mapping[str, Any], secret_env: frozenset[tuple[str, str]]
) -> list[EnvironmentVariable]:
    """The container's resolved env; values that came from Secrets as ``secure_value``. A name
    given twice keeps its last value (the kubelet's rule), at its first place."""
    name = container.get("name", "")
    values: dict[str, str] = {}
    for variable in container.get("env") or []:
        values[str(variable["name"])] = str(variable.get("value") or "")
    return [
        EnvironmentVariable(name=key, secure_value=value)
        if (name, key) in secret_env
        else EnvironmentVariable(name=key, value=value)
        for key, value in values.items()
    ]


def _quantity(text: Any, field: str) -> Fraction:
    try:
        return parse_quantity(text)
    except ValueError as exc:
        raise _invalid(field, str(exc)) from exc


def cpu_cores(quantity: Fraction) -> float:
    """Cores for ACI: rounded up to 0.01, at least 0.01."""
    return float(Fraction(max(1, math.ceil(quantity * 100)), 100))


def memory_gb(quantity: Fraction) -> float:
    """Decimal GB for ACI: rounded up to 0.1, at least 0.1 (1Gi -> 1.1, 512Mi -> 0.6)."""
    return float(Fraction(max(1, math.ceil(quantity / 10**8)), 10))


def gpu(
    container: Mapping[str, Any], field: str, config: AciConfig, annotations: Mapping[str, str]
) -> GpuResource | None:
    """``nvidia.com/gpu`` (limits, else requests) as ACI's GPU count and SKU."""
    resources = container.get("resources") or {}
    limits = resources.get("limits") or {}
    requests = resources.get("requests") or {}
    kind = "limits" if GPU_RESOURCE in limits else "requests"
    text = (limits if kind == "limits" else requests).get(GPU_RESOURCE)
    if text is None:
        return None
    where = f"{field}.resources.{kind}[{GPU_RESOURCE}]"
    count = _quantity(text, where)
    if count.denominator != 1 or count < 0:
        raise _invalid(where, f"{text!r} is not a whole number of GPUs")
    if count == 0:
        return None
    if config.os_type != "Linux":
        raise _invalid(where, "ACI has GPUs for Linux container groups only")
    wanted = annotations.get(config.gpu_sku_annotation) or config.gpu_sku
    sku = next((known for known in GPU_SKUS if known.lower() == wanted.lower()), wanted)
    return GpuResource(count=int(count), sku=sku)


def resources(
    container: Mapping[str, Any], field: str, config: AciConfig, gpu_resource: GpuResource | None
) -> ResourceRequirements:
    """Requests (defaults where unset) and the limits the pod sets, in ACI's units."""
    spec = container.get("resources") or {}
    requests = spec.get("requests") or {}
    limits = spec.get("limits") or {}

    def value(name: str, default: str) -> Fraction:
        if name in requests:
            return _quantity(requests[name], f"{field}.resources.requests.{name}")
        if name in limits:  # the API server's defaulting: the request is the limit
            return _quantity(limits[name], f"{field}.resources.limits.{name}")
        return parse_quantity(default)

    request = ResourceRequests(
        cpu=cpu_cores(value("cpu", config.default_cpu)),
        memory_in_gb=memory_gb(value("memory", config.default_memory)),
        gpu=gpu_resource,
    )
    limit: ResourceLimits | None = None
    if "cpu" in limits or "memory" in limits:
        limit = ResourceLimits(
            cpu=cpu_cores(_quantity(limits["cpu"], f"{field}.resources.limits.cpu"))
            if "cpu" in limits
            else None,
            memory_in_gb=memory_gb(_quantity(limits["memory"], f"{field}.resources.limits.memory"))
            if "memory" in limits
            else None,
            gpu=gpu_resource,
        )
    return ResourceRequirements(requests=request, limits=limit)


def container_ports(
    container: Mapping[str, Any], field: str, warnings: list[MappingWarning]
) -> list[ContainerPort]:
    ports = []
    for j, port in enumerate(container.get("ports") or []):
        protocol = str(port.get("protocol") or "TCP")
        if protocol not in ("TCP", "UDP"):
            raise _invalid(f"{field}.ports[{j}].protocol", f"ACI has TCP and UDP ports, not {protocol}")
        number = int(port["containerPort"])
        if port.get("hostPort") and int(port["hostPort"]) != number:
            _warn(
                warnings,
                f"{field}.ports[{j}].hostPort",
                UNSUPPORTED_FIELD,
                f"ACI exposes the container port {number}, not host port {port['hostPort']}",
            )
        ports.append(ContainerPort(port=number, protocol=protocol))
    return ports


def _probe_port(port: Any, container: Mapping[str, Any], field: str) -> int:
    if isinstance(port, int):
        return port
    text = str(port)
    if text.isdigit():
        return int(text)
    for declared in container.get("ports") or []:
        if declared.get("name") == text:
            return int(declared["containerPort"])
    raise _invalid(f"{field}.httpGet.port", f"the container has no port named {text!r}")


def probe(
    spec: Mapping[str, Any] | None, container: Mapping[str, Any], field: str, warnings: list[MappingWarning]
) -> ContainerProbe | None:
    """An exec or httpGet probe; any other kind gets a Warning and is left out."""
    if not spec:
        return None
    timing: dict[str, Any] = {
        "initial_delay_seconds": spec.get("initialDelaySeconds"),
        "period_seconds": spec.get("periodSeconds"),
        "failure_threshold": spec.get("failureThreshold"),
        "success_threshold": spec.get("successThreshold"),
        "timeout_seconds": spec.get("timeoutSeconds"),
    }
    if spec.get("exec") is not None:
        return ContainerProbe(
            exec_property=ContainerExec(command=[str(c) for c in spec["exec"].get("command") or []]), **timing
        )
    if spec.get("httpGet") is not None:
        get = spec["httpGet"]
        if get.get("host"):
            _warn(
                warnings,
                f"{field}.httpGet.host",
                UNSUPPORTED_FIELD,
                f"ACI probes the container itself, not host {get['host']!r}",
            )
        headers = [HttpHeader(name=h.get("name"), value=h.get("value")) for h in get.get("httpHeaders") or []]
        return ContainerProbe(
            http_get=ContainerHttpGet(
                port=_probe_port(get.get("port"), container, field),
                path=get.get("path") or None,
                scheme=str(get.get("scheme") or "HTTP").lower(),
                http_headers=headers or None,
            ),
            **timing,
        )
    kinds = ", ".join(k for k in ("tcpSocket", "grpc") if spec.get(k) is not None) or "this kind of"
    probe_name = field.rsplit(".", 1)[-1]
    _warn(
        warnings,
        field,
        UNSUPPORTED_PROBE,
        f"ACI has exec and httpGet probes only: the {kinds} {probe_name} of container "
        f"{container.get('name')!r} is not run",
    )
    return None


def _unsupported_container_fields(
    container: Mapping[str, Any], field: str, warnings: list[MappingWarning]
) -> None:
    name = container.get("name")
    if container.get("workingDir"):
        _warn(
            warnings,
            f"{field}.workingDir",
            UNSUPPORTED_FIELD,
            f"ACI has no working directory: container {name!r} starts in the image's",
        )
    if container.get("lifecycle"):
        _warn(
            warnings,
            f"{field}.lifecycle",
            UNSUPPORTED_FIELD,
            f"ACI has no lifecycle hooks: those of container {name!r} are not run",
        )
    if container.get("startupProbe"):
        _warn(
            warnings,
            f"{field}.startupProbe",
            UNSUPPORTED_PROBE,
            f"ACI has no startup probes: the startupProbe of container {name!r} is not run",
        )


def app_container(
    container: Mapping[str, Any],
    field: str,
    prepared: PreparedPod,
    config: AciConfig,
    plan: VolumePlan,
    warnings: list[MappingWarning],
) -> Container:
    annotations = (prepared.pod.get("metadata") or {}).get("annotations") or {}
    if not container.get("image"):
        raise _invalid(f"{field}.image", "an image is required")
    _unsupported_container_fields(container, field, warnings)
    return Container(
        name=container["name"],
        image=container["image"],
        command=command(container, field),
        ports=container_ports(container, field, warnings) or None,
        environment_variables=environment(container, prepared.secret_env) or None,
        resources=resources(container, field, config, gpu(container, field, config, annotations)),
        volume_mounts=volume_mounts(container, field, plan, warnings) or None,
        liveness_probe=probe(container.get("livenessProbe"), container, f"{field}.livenessProbe", warnings),
        readiness_probe=probe(
            container.get("readinessProbe"), container, f"{field}.readinessProbe", warnings
        ),
    )


def init_container(
    container: Mapping[str, Any],
    field: str,
    prepared: PreparedPod,
    plan: VolumePlan,
    warnings: list[MappingWarning],
) -> InitContainerDefinition:
    """ACI init containers have no ports, probes or resources (they share the group's)."""
    if container.get("restartPolicy") == "Always":
        raise _invalid(
            f"{field}.restartPolicy",
            "ACI init containers run to completion: a restartable (sidecar) init container cannot be "
            "expressed, make it a regular container",
        )
    if not container.get("image"):
        raise _invalid(f"{field}.image", "an image is required")
    name = container.get("name")
    for key, what in (("ports", "ports"), ("resources", "resources"), ("livenessProbe", "probes")):
        if container.get(key):
            _warn(
                warnings,
                f"{field}.{key}",
                UNSUPPORTED_FIELD,
                f"ACI init containers have no {what}: those of {name!r} are not used",
            )
    if container.get("readinessProbe") and not container.get("livenessProbe"):
        _warn(
            warnings,
            f"{field}.readinessProbe",
            UNSUPPORTED_FIELD,
            f"ACI init containers have no probes: those of {name!r} are not used",
        )
    _unsupported_container_fields(container, field, warnings)
    return InitContainerDefinition(
        name=container["name"],
        image=container["image"],
        command=command(container, field),
        environment_variables=environment(container, prepared.secret_env) or None,
        volume_mounts=volume_mounts(container, field, plan, warnings) or None,
    )


# --- volumes ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class MountedVolume:
    """How a pod volume is mounted: ACI volumes, each at a directory under the mount path."""

    parts: tuple[tuple[str, str], ...]  # (ACI volume name, relative directory; "" for the mount path)
    read_only: bool = False  # the volume is read-only whatever the mount says (azureFile readOnly)


@dataclasses.dataclass
class VolumePlan:
    volumes: list[Volume] = dataclasses.field(default_factory=list)
    mounts: dict[str, MountedVolume] = dataclasses.field(default_factory=dict)  # by pod volume name
    dropped: set[str] = dataclasses.field(default_factory=set)  # pod volumes left out (with a Warning)


def sub_volume_name(volume: str, directory: str) -> str:
    """The ACI volume of ``directory`` of a split secret-like volume."""
    digest = hashlib.sha256(f"{volume}/{directory}".encode()).hexdigest()[:12]
    return f"{volume[: naming.NAME_MAX - 13].rstrip('-')}-{digest}"


def secret_volumes(resolved: ResolvedVolume) -> list[tuple[str, str, dict[str, str]]]:
    """A secret-like volume as ACI secret volumes: (ACI name, directory, file name -> base64), one
    per directory with files, parents first; [] when it has no files."""
    by_directory: dict[str, dict[str, str]] = {}
    for path in sorted(resolved.files):
        directory, file_name = posixpath.split(path)
        by_directory.setdefault(directory, {})[file_name] = base64.b64encode(resolved.files[path]).decode()
    ordered = sorted(by_directory, key=lambda d: (d.count("/") + (d != ""), d))
    return [(sub_volume_name(resolved.name, d) if d else resolved.name, d, by_directory[d]) for d in ordered]


def _file_modes(resolved: ResolvedVolume, field: str, warnings: list[MappingWarning]) -> None:
    odd = {path: mode for path, mode in sorted(resolved.modes.items()) if mode != DEFAULT_FILE_MODE}
    if odd:
        listed = ", ".join(f"{path} ({mode:04o})" for path, mode in odd.items())
        _warn(
            warnings,
            field,
            UNSUPPORTED_FILE_MODE,
            f"ACI secret volumes have no file modes: {listed} get ACI's mode",
        )


def storage_account(resolved: ResolvedVolume, secret: str) -> tuple[str, str]:
    """(account name, key) from the Secret the core read for an Azure Files volume."""
    data = resolved.secret
    missing = [key for key in (STORAGE_ACCOUNT_NAME_KEY, STORAGE_ACCOUNT_KEY_KEY) if not data.get(key)]
    if missing:
        raise TransientError(
            f'MountVolume.SetUp failed for volume "{resolved.name}" : secret "{secret}" has no '
            f"{', '.join(missing)}",
            reason=FAILED_MOUNT,
        )
    try:
        return data[STORAGE_ACCOUNT_NAME_KEY].decode().strip(), data[STORAGE_ACCOUNT_KEY_KEY].decode().strip()
    except UnicodeDecodeError:
        raise TransientError(
            f'MountVolume.SetUp failed for volume "{resolved.name}" : secret "{secret}": the storage '
            "account name and key must be text",
            reason=FAILED_MOUNT,
        ) from None


def azure_file_source(resolved: ResolvedVolume, field: str, namespace: str) -> tuple[str, str, bool]:
    """(share, Secret name, read-only) of an in-tree ``azureFile`` or a ``file.csi.azure.com`` volume."""
    source = resolved.source
    if resolved.kind == "azureFile":
        where = f"{field}.azureFile"
        return (
            _required(source.get("shareName"), f"{where}.shareName"),
            _required(source.get("secretName"), f"{where}.secretName"),
            bool(source.get("readOnly")),
        )
    driver = source.get("driver")
    if driver != AZURE_FILE_DRIVER:
        raise _invalid(
            f"{field}.csi.driver", f"ACI mounts CSI volumes of {AZURE_FILE_DRIVER} only, not {driver}"
        )
    attributes = source.get("volumeAttributes") or {}
    share = _required(attributes.get("shareName"), f"{field}.csi.volumeAttributes.shareName")
    published = (source.get("nodePublishSecretRef") or {}).get("name")
    named = attributes.get("secretName")
    if not published:
        if named:
            raise _invalid(
                f"{field}.csi.volumeAttributes.secretName",
                f"ACI needs the storage key of Secret {named!r}: name it in csi.nodePublishSecretRef "
                "(the Secret the virtual kubelet reads), not only in volumeAttributes",
            )
        raise _invalid(
            f"{field}.csi.nodePublishSecretRef", "required: the Secret with the storage account key"
        )
    if named and named != published:
        raise _invalid(
            f"{field}.csi.volumeAttributes.secretName",
            f"names Secret {named!r}, nodePublishSecretRef {published!r}: ACI has one storage key",
        )
    other = attributes.get("secretNamespace")
    if other and other != namespace:
        raise _invalid(
            f"{field}.csi.volumeAttributes.secretNamespace",
            "the storage key must be in a Secret of the pod's namespace (nodePublishSecretRef)",
        )
    return share, str(published), bool(source.get("readOnly"))


def _required(value: Any, field: str) -> str:
    if not value:
        raise _invalid(field, "required")
    return str(value)


def _is_service_account_volume(volume: Mapping[str, Any]) -> bool:
    sources = (volume.get("projected") or {}).get("sources") or []
    return any(source.get("serviceAccountToken") is not None for source in sources)


def volume_plan(prepared: PreparedPod, config: AciConfig, warnings: list[MappingWarning]) -> VolumePlan:
    """The group's volumes, and how each pod volume is mounted."""
    plan = VolumePlan()
    spec = prepared.pod.get("spec") or {}
    namespace = prepared.ref.namespace
    pod_names = {str(v.get("name")) for v in spec.get("volumes") or []}
    for i, volume in enumerate(spec.get("volumes") or []):
        name, field = str(volume.get("name")), f"spec.volumes[{i}]"
        resolved = prepared.volumes.get(name)
        if resolved is None:
            raise _invalid(field, f"volume {name!r} was not prepared")
        if config.os_type != "Linux":
            if _is_service_account_volume(volume):
                plan.dropped.add(name)
                _warn(
                    warnings,
                    field,
                    UNSUPPORTED_VOLUME,
                    f"ACI has no volumes in Windows container groups: {name!r} (the service account "
                    "token) is not mounted",
                )
                continue
            raise _invalid(field, f"ACI has no volumes in Windows container groups ({name!r})")
        if resolved.kind == "emptyDir":
            if resolved.medium:
                _warn(
                    warnings,
                    f"{field}.emptyDir.medium",
                    UNSUPPORTED_FIELD,
                    "ACI emptyDir volumes are on disk",
                )
            if resolved.size_limit:
                _warn(
                    warnings,
                    f"{field}.emptyDir.sizeLimit",
                    UNSUPPORTED_FIELD,
                    "ACI emptyDir volumes have no size limit",
                )
            plan.volumes.append(Volume(name=name, empty_dir={}))
            plan.mounts[name] = MountedVolume(((name, ""),))
        elif resolved.kind in SECRET_KINDS:
            _file_modes(resolved, field, warnings)
            parts = secret_volumes(resolved)
            if not parts:
                plan.volumes.append(Volume(name=name, empty_dir={}))
                plan.mounts[name] = MountedVolume(((name, ""),))
                continue
            for aci_name, _, files in parts:
                if aci_name != name and aci_name in pod_names:
                    raise _invalid(
                        field, f"the ACI volume {aci_name!r} for a directory of {name!r} is a pod volume"
                    )
                plan.volumes.append(Volume(name=aci_name, secret=files))
            plan.mounts[name] = MountedVolume(tuple((aci_name, d) for aci_name, d, _ in parts))
        elif resolved.kind in ("azureFile", "csi"):
            share, secret, read_only = azure_file_source(resolved, field, namespace)
            if resolved.kind == "csi" and (resolved.source.get("volumeAttributes") or {}).get("mountOptions"):
                _warn(
                    warnings,
                    f"{field}.csi.volumeAttributes.mountOptions",
                    UNSUPPORTED_FIELD,
                    "ACI mounts Azure Files shares with its own options",
                )
            account, key = storage_account(resolved, secret)
            azure_file = AzureFileVolume(
                share_name=share,
                storage_account_name=account,
                storage_account_key=key,
                read_only=read_only or None,
            )
            plan.volumes.append(Volume(name=name, azure_file=azure_file))
            plan.mounts[name] = MountedVolume(((name, ""),), read_only=read_only)
        elif resolved.kind == "gitRepo":
            source = resolved.source
            git = GitRepoVolume(
                repository=_required(source.get("repository"), f"{field}.gitRepo.repository"),
                revision=source.get("revision") or None,
                directory=source.get("directory") or None,
            )
            plan.volumes.append(Volume(name=name, git_repo=git))
            plan.mounts[name] = MountedVolume(((name, ""),))
        else:
            raise _invalid(field, f"ACI cannot mount {resolved.kind} volumes")
    return plan


def volume_mounts(
    container: Mapping[str, Any], field: str, plan: VolumePlan, warnings: list[MappingWarning]
) -> list[VolumeMount]:
    mounts = []
    for j, mount in enumerate(container.get("volumeMounts") or []):
        where = f"{field}.volumeMounts[{j}]"
        name = str(mount.get("name"))
        if name in plan.dropped:
            continue
        mounted = plan.mounts.get(name)
        if mounted is None:
            raise _invalid(f"{where}.name", f"no volume {name!r}")
        for key in ("subPath", "subPathExpr"):
            if mount.get(key):
                raise _invalid(f"{where}.{key}", "ACI mounts whole volumes: it has no subPath")
        path = str(mount.get("mountPath") or "")
        if not path or ":" in path:
            raise _invalid(f"{where}.mountPath", "ACI needs a mount path without ':'")
        if mount.get("mountPropagation") not in (None, "None"):
            _warn(warnings, f"{where}.mountPropagation", UNSUPPORTED_FIELD, "ACI has no mount propagation")
        read_only = bool(mount.get("readOnly")) or mounted.read_only
        for aci_name, directory in mounted.parts:
            target = posixpath.join(path, directory) if directory else path
            mounts.append(VolumeMount(name=aci_name, mount_path=target, read_only=read_only))
    return mounts


# --- the group -------------------------------------------------------------------------------------


def group_ports(containers: Iterable[Container]) -> list[Port]:
    """Every container port once, as the group's (IP address) ports."""
    seen: dict[tuple[int, str], Port] = {}
    for container in containers:
        for port in container.ports or []:
            protocol = str(port.protocol or "TCP")
            seen.setdefault((port.port, protocol), Port(port=port.port, protocol=protocol))
    return list(seen.values())


def ip_address(
    annotations: Mapping[str, str], ports: list[Port], config: AciConfig, warnings: list[MappingWarning]
) -> IpAddress | None:
    """Private in the configured subnets, else public with the DNS name label; None without ports."""
    label = annotations.get(config.dns_name_label_annotation)
    field = f"metadata.annotations[{config.dns_name_label_annotation}]"
    if config.subnets:
        if label:
            _warn(
                warnings,
                field,
                UNSUPPORTED_FIELD,
                "a DNS name label needs a public IP; this node's groups are private",
            )
        return IpAddress(type="Private", ports=ports) if ports else None
    if not ports:
        if label:
            _warn(
                warnings,
                field,
                UNSUPPORTED_FIELD,
                "a DNS name label needs a public IP, which needs container ports",
            )
        return None
    return IpAddress(type="Public", ports=ports, dns_name_label=label or None)


def _dedupe(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


def dns_config(
    pod: Mapping[str, Any], config: AciConfig, warnings: list[MappingWarning]
) -> DnsConfiguration | None:
    """The pod's resolver as the kubelet would write it; None: ACI's default."""
    spec = pod.get("spec") or {}
    namespace = (pod.get("metadata") or {}).get("namespace", "")
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    if policy == "ClusterFirst" and spec.get("hostNetwork"):
        policy = "Default"  # the kubelet's rule
    elif policy == "ClusterFirstWithHostNet":
        policy = "ClusterFirst"
    own = spec.get("dnsConfig") or {}
    nameservers: list[str] = []
    searches: list[str] = []
    options: dict[str, str | None] = {}
    if policy == "ClusterFirst":
        if config.dns.nameservers:
            nameservers = [str(ip) for ip in config.dns.nameservers]
            domain = config.dns.cluster_domain
            if domain:
                searches = [f"{namespace}.svc.{domain}", f"svc.{domain}", domain]
            searches += config.dns.search_domains
            for option in config.dns.options:
                key, _, value = option.partition(":")
                options[key] = value or None
        else:
            _warn(
                warnings,
                "spec.dnsPolicy",
                MISSING_CLUSTER_DNS,
                'kubelet does not have ClusterDNS IP configured and cannot create Pod using "ClusterFirst" '
                'policy. Falling back to "Default" policy.',
            )
    nameservers = _dedupe([*nameservers, *(own.get("nameservers") or [])])
    searches = _dedupe([*searches, *(own.get("searches") or [])])
    for option in own.get("options") or []:
        options[str(option.get("name"))] = None if option.get("value") is None else str(option["value"])
    if not nameservers:
        if searches or options:
            _warn(
                warnings,
                "spec.dnsConfig",
                UNSUPPORTED_FIELD,
                "ACI sets searches and options only with nameservers: these are not applied",
            )
        return None
    if len(nameservers) > MAX_NAMESERVERS:
        nameservers = nameservers[:MAX_NAMESERVERS]
        _warn(
            warnings,
            "spec.dnsConfig.nameservers",
            DNS_CONFIG_FORMING,
            "Nameserver limits were exceeded, some nameservers have been omitted, the applied nameserver "
            f"line is: {' '.join(nameservers)}",
        )
    fitted = _fit_searches(searches)
    if fitted != searches:
        _warn(
            warnings,
            "spec.dnsConfig.searches",
            DNS_CONFIG_FORMING,
            "Search Line limits were exceeded, some search paths have been omitted, the applied search line "
            f"is: {' '.join(fitted)}",
        )
    line = " ".join(key if value is None else f"{key}:{value}" for key, value in options.items())
    return DnsConfiguration(
        name_servers=nameservers, search_domains=" ".join(fitted) or None, options=line or None
    )


def _fit_searches(searches: list[str]) -> list[str]:
    fitted = [s for s in searches[:MAX_SEARCHES] if len(s) <= 253]
    while fitted and len(" ".join(fitted)) > MAX_SEARCH_CHARS:
        fitted.pop()
    return fitted


def restart_policy(pod: Mapping[str, Any]) -> str:
    policy = (pod.get("spec") or {}).get("restartPolicy") or "Always"
    if policy not in ("Always", "OnFailure", "Never"):
        raise _invalid("spec.restartPolicy", f"ACI has Always, OnFailure and Never, not {policy}")
    return str(policy)


def sku(
    annotations: Mapping[str, str], config: AciConfig
) -> tuple[str | None, ConfidentialComputeProperties | None]:
    """The group's SKU from the SKU annotation; a CCE policy annotation makes it Confidential."""
    field = f"metadata.annotations[{config.confidential_sku_annotation}]"
    wanted = annotations.get(config.confidential_sku_annotation)
    chosen = SKUS.get(wanted.lower()) if wanted else None
    if wanted and chosen is None:
        raise _invalid(field, f"ACI SKUs are {', '.join(SKUS.values())}, not {wanted!r}")
    policy = annotations.get(config.cce_policy_annotation)
    if policy:
        if chosen not in (None, "Confidential"):
            raise _invalid(field, f"a confidential computing policy needs the Confidential SKU, not {wanted}")
        return "Confidential", ConfidentialComputeProperties(cce_policy=policy)
    return chosen, None


def image_registry_credentials(credentials: Sequence[RegistryCredential]) -> list[ImageRegistryCredential]:
    """The pod's registry logins (the core's, from its imagePullSecrets): one per server, the first."""
    by_server: dict[str, ImageRegistryCredential] = {}
    for credential in credentials:
        by_server.setdefault(
            credential.server,
            ImageRegistryCredential(
                server=credential.server, username=credential.username, password=credential.password
            ),
        )
    return list(by_server.values())


def container_group(
    prepared: PreparedPod,
    config: AciConfig,
    node_name: str,
) -> tuple[ContainerGroup, list[MappingWarning]]:
    """The container group of ``prepared`` (its name: ``naming.container_group_name``) and the
    Warnings to post. Raises InvalidPodError (permanent) or TransientError (FailedMount)."""
    pod = prepared.pod
    spec = pod.get("spec") or {}
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    warnings: list[MappingWarning] = []
    if not spec.get("containers"):
        raise _invalid("spec.containers", "at least one container is required")
    if spec.get("hostAliases"):
        _warn(warnings, "spec.hostAliases", UNSUPPORTED_FIELD, "ACI has no host aliases: /etc/hosts is ACI's")
    plan = volume_plan(prepared, config, warnings)
    init = [
        init_container(c, f"spec.initContainers[{i}]", prepared, plan, warnings)
        for i, c in enumerate(spec.get("initContainers") or [])
    ]
    containers = [
        app_container(c, f"spec.containers[{i}]", prepared, config, plan, warnings)
        for i, c in enumerate(spec["containers"])
    ]
    group_sku, confidential = sku(annotations, config)
    credentials = image_registry_credentials(prepared.registry_credentials)
    group = ContainerGroup(
        location=config.region,
        tags=naming.group_tags(prepared.ref, node_name, config.tags),
        containers=containers,
        init_containers=init or None,
        image_registry_credentials=credentials or None,
        restart_policy=restart_policy(pod),
        ip_address=ip_address(annotations, group_ports(containers), config, warnings),
        os_type=config.os_type,
        volumes=plan.volumes or None,
        subnet_ids=[ContainerGroupSubnetId(id=subnet) for subnet in config.subnets] or None,
        dns_config=dns_config(pod, config, warnings),
        sku=group_sku,
        confidential_compute_properties=confidential,
    )
    return group, warnings

"""A pod's volumes turned into file contents, as the kubelet's configMap/secret/projected/downwardAPI
plugins would write them. Pure: the data comes in as :class:`~vk_operator.domain.env.Sources`.

Other volume types reach the provider untouched when it declares it mounts them itself
(``volume_types``: ``azureFile``, ``nfs``, ``csi:file.csi.azure.com``...); any other type stops the
pod, naming the volume.
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Mapping
from typing import Any, TypeVar

from vk_operator.domain.env import (
    EnvEvent,
    ReadError,
    ResolutionError,
    Sources,
    pod_field_value,
    resource_field_value,
)
from vk_operator.domain.model import Pod

FAILED_MOUNT = "FailedMount"
UNSUPPORTED_VOLUME = "UnsupportedVolume"
OPTIONAL_CONFIGMAP_NOT_FOUND = "OptionalConfigMapNotFound"
OPTIONAL_CONFIGMAP_KEY_NOT_FOUND = "OptionalConfigMapKeyNotFound"
OPTIONAL_SECRET_NOT_FOUND = "OptionalSecretNotFound"
OPTIONAL_SECRET_KEY_NOT_FOUND = "OptionalSecretKeyNotFound"

SUPPORTED_KINDS = ("emptyDir", "configMap", "secret", "projected", "downwardAPI")
DEFAULT_MODE = 0o644  # the API server's default for defaultMode

_V = TypeVar("_V", Mapping[str, str], Mapping[str, bytes])


@dataclasses.dataclass(frozen=True)
class ResolvedVolume:
    name: str
    kind: str  # "emptyDir" | "configMap" | "secret" | "projected" | "downwardAPI" | a declared type
    files: Mapping[str, bytes]  # relative path -> content (empty for emptyDir)
    sensitive: bool  # any content came from a Secret or a token
    medium: str | None = None  # emptyDir medium ("" = node default, "Memory" = tmpfs); None otherwise
    size_limit: str | None = None
    modes: Mapping[str, int] = dataclasses.field(default_factory=dict)  # relative path -> file mode
    # A type the provider declared: the pod's volume source as it is (``volume[kind]``) and the
    # decoded data of the Secret it names (azureFile's storage key, a CSI nodePublishSecretRef).
    source: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    secret: Mapping[str, bytes] = dataclasses.field(default_factory=dict, repr=False)


@dataclasses.dataclass(frozen=True)
class VolumeResult:
    volumes: Mapping[str, ResolvedVolume]
    events: tuple[EnvEvent, ...]
    fatal: EnvEvent | None  # unsupported volume type or a mandatory source missing; volumes then empty


def _mount_failed(volume: str, why: str) -> ResolutionError:
    # The kubelet's wording, so `kubectl describe` reads the same as on a real node.
    return ResolutionError(
        EnvEvent(FAILED_MOUNT, f'MountVolume.SetUp failed for volume "{volume}" : {why}', True)
    )


def _unsupported(message: str) -> ResolutionError:
    return ResolutionError(EnvEvent(UNSUPPORTED_VOLUME, message, warning=True))


class _Files:
    """The files of one volume being built."""

    def __init__(self, volume: str, default_mode: int) -> None:
        self.volume = volume
        self.default_mode = default_mode
        self.files: dict[str, bytes] = {}
        self.modes: dict[str, int] = {}
        self.sensitive = False

    def add(self, path: str, content: bytes, mode: Any = None) -> None:
        # The API server validates paths too; re-check, as providers write these under a mount point.
        parts = path.split("/")
        if not path or posixpath.isabs(path) or ".." in parts:
            raise _mount_failed(self.volume, f"invalid path {path!r}: must be relative and without '..'")
        self.files[path] = content
        self.modes[path] = int(mode) if mode is not None else self.default_mode


def _object(
    files: _Files,
    noun: str,
    found: _V | ReadError | None,
    name: str,
    optional: bool,
    events: list[EnvEvent],
    not_found_reason: str,
) -> _V | None:
    """The ConfigMap/Secret data; None when optional and missing (event recorded)."""
    if isinstance(found, ReadError):
        # As in the kubelet, only "not found" is forgiven for optional sources.
        raise _mount_failed(files.volume, f'failed to read {noun} "{name}": {found.message}')
    if found is None:
        if not optional:
            raise _mount_failed(files.volume, f'{noun} "{name}" not found')
        events.append(
            EnvEvent(not_found_reason, f'volume "{files.volume}": optional {noun} "{name}" not found', False)
        )
        return None
    return found


def _project(
    files: _Files,
    noun: str,
    name: str,
    data: Mapping[str, bytes],
    items: list[Mapping[str, Any]],
    optional: bool,
    events: list[EnvEvent],
    key_reason: str,
) -> None:
    # The kubelet's MakePayload: every key as a file, or only `items` (key -> path, optional mode).
    if not items:
        for key in sorted(data):
            files.add(key, data[key])
        return
    for item in items:
        key = str(item.get("key") or "")
        if key not in data:
            if not optional:
                raise _mount_failed(files.volume, f'{noun} "{name}" references non-existent key "{key}"')
            message = f'volume "{files.volume}": key "{key}" does not exist in optional {noun} "{name}"'
            events.append(EnvEvent(key_reason, message, warning=False))
            continue
        files.add(str(item.get("path") or ""), data[key], item.get("mode"))


def _configmap(files: _Files, source: Mapping[str, Any], sources: Sources, events: list[EnvEvent]) -> None:
    name = str(source.get("name") or "")
    optional = source.get("optional") is True
    found = _object(
        files, "configmap", sources.configmaps.get(name), name, optional, events, OPTIONAL_CONFIGMAP_NOT_FOUND
    )
    if found is None:
        return
    data = {key: value.encode() for key, value in found.items()}
    data.update(sources.configmap_binary.get(name) or {})
    items = list(source.get("items") or [])
    _project(files, "configmap", name, data, items, optional, events, OPTIONAL_CONFIGMAP_KEY_NOT_FOUND)


def _secret(
    files: _Files, source: Mapping[str, Any], name: str, sources: Sources, events: list[EnvEvent]
) -> None:
    optional = source.get("optional") is True
    files.sensitive = True  # even if empty: the provider must treat the mount as secret
    found = _object(
        files, "secret", sources.secrets.get(name), name, optional, events, OPTIONAL_SECRET_NOT_FOUND
    )
    if found is None:
        return
    items = list(source.get("items") or [])
    _project(files, "secret", name, found, items, optional, events, OPTIONAL_SECRET_KEY_NOT_FOUND)


def _downward_api(files: _Files, source: Mapping[str, Any], pod: Pod, sources: Sources) -> None:
    for item in source.get("items") or []:
        path = str(item.get("path") or "")
        where = f'volume "{files.volume}" item "{path}"'
        if item.get("fieldRef") is not None:
            field_path = str(item["fieldRef"].get("fieldPath") or "")
            value = pod_field_value(pod, field_path, sources, runtime=False, where=where)
        elif item.get("resourceFieldRef") is not None:
            value = resource_field_value(pod, item["resourceFieldRef"], None, sources, where=where)
        else:
            raise _mount_failed(files.volume, f'item "{path}" has neither fieldRef nor resourceFieldRef')
        files.add(path, value.encode(), item.get("mode"))


def _projected(
    files: _Files, projected: Mapping[str, Any], pod: Pod, sources: Sources, events: list[EnvEvent]
) -> None:
    for source in projected.get("sources") or []:
        if source.get("configMap") is not None:
            _configmap(files, source["configMap"], sources, events)
        elif source.get("secret") is not None:
            _secret(files, source["secret"], str(source["secret"].get("name") or ""), sources, events)
        elif source.get("downwardAPI") is not None:
            _downward_api(files, source["downwardAPI"], pod, sources)
        elif source.get("serviceAccountToken") is not None:
            token = source["serviceAccountToken"]
            if sources.service_account_token is None:
                raise _mount_failed(files.volume, "service account token not available")
            files.sensitive = True
            files.add(str(token.get("path") or ""), sources.service_account_token.encode())
        else:
            kinds = ", ".join(sorted(source)) or "empty"
            raise _unsupported(
                f'volume "{files.volume}" has a projected {kinds} source, which this provider cannot mount'
            )


def volume_type(volume: Mapping[str, Any]) -> str:
    """The volume's type as providers declare it: its source key, ``csi:<driver>`` for CSI."""
    kinds = [key for key in volume if key != "name"]
    kind = kinds[0] if kinds else "emptyDir"  # the API server defaults a volume without a source
    driver = (volume.get("csi") or {}).get("driver") if kind == "csi" else None
    return f"csi:{driver}" if driver else kind


def volume_secret_name(volume: Mapping[str, Any]) -> str | None:
    """The Secret a volume type the core does not mount itself names for its credentials:
    ``azureFile.secretName``, ``csi.nodePublishSecretRef``, the ``secretRef`` of the others."""
    kind = volume_type(volume).partition(":")[0]
    if kind in SUPPORTED_KINDS:
        return None
    spec = volume.get(kind) or {}
    if kind == "azureFile":
        name = spec.get("secretName")
    else:
        name = (spec.get("nodePublishSecretRef") or spec.get("secretRef") or {}).get("name")
    return str(name) if name else None


def _declared(
    name: str, kind: str, spec: Mapping[str, Any], volume: Mapping[str, Any], sources: Sources
) -> ResolvedVolume:
    secret_name = volume_secret_name(volume)
    if secret_name is None:
        return ResolvedVolume(name, kind, {}, False, source=spec)
    data = sources.secrets.get(secret_name)
    if isinstance(data, ReadError):
        raise _mount_failed(name, f'failed to read secret "{secret_name}": {data.message}')
    if data is None:
        raise _mount_failed(name, f'secret "{secret_name}" not found')
    return ResolvedVolume(name, kind, {}, True, source=spec, secret=dict(data))


def credential_secrets(pod: Pod) -> set[str]:
    """The Secrets the pod's provider-mounted volumes name for their credentials."""
    names = (volume_secret_name(volume) for volume in (pod.get("spec") or {}).get("volumes") or [])
    return {name for name in names if name}


def _resolve(
    pod: Pod,
    volume: Mapping[str, Any],
    sources: Sources,
    events: list[EnvEvent],
    provider_types: frozenset[str],
) -> ResolvedVolume:
    name = str(volume.get("name") or "")
    declared = volume_type(volume)
    kind = declared.partition(":")[0]
    spec: Mapping[str, Any] = volume.get(kind) or {}
    if kind not in SUPPORTED_KINDS:
        if declared in provider_types:
            return _declared(name, kind, spec, volume, sources)
        raise _unsupported(f'volume "{name}" has type {declared}, which this provider cannot mount')
    if kind == "emptyDir":
        size_limit = spec.get("sizeLimit")
        return ResolvedVolume(
            name, kind, {}, False, str(spec.get("medium") or ""), str(size_limit) if size_limit else None
        )
    mode = spec.get("defaultMode")
    files = _Files(name, int(mode) if mode is not None else DEFAULT_MODE)
    if kind == "configMap":
        _configmap(files, spec, sources, events)
    elif kind == "secret":
        _secret(files, spec, str(spec.get("secretName") or ""), sources, events)
    elif kind == "downwardAPI":
        _downward_api(files, spec, pod, sources)
    else:
        _projected(files, spec, pod, sources, events)
    return ResolvedVolume(name, kind, files.files, files.sensitive, modes=files.modes)


def resolve_volumes(pod: Pod, sources: Sources, provider_types: frozenset[str] = frozenset()) -> VolumeResult:
    """Every volume of ``pod`` with its files; stops at the first volume that cannot be mounted.

    ``provider_types``: the volume types the provider mounts itself (passed through).
    """
    events: list[EnvEvent] = []
    volumes: dict[str, ResolvedVolume] = {}
    try:
        for volume in (pod.get("spec") or {}).get("volumes") or []:
            resolved = _resolve(pod, volume, sources, events, provider_types)
            volumes[resolved.name] = resolved
    except ResolutionError as error:
        return VolumeResult({}, tuple(events), error.event)
    return VolumeResult(volumes, tuple(events), None)

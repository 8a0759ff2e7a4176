"""A container's environment, resolved the way the kubelet does it (``makeEnvironmentVariables``).

Pure: the core fetches every ConfigMap, Secret and Service a pod references (see ``referenced_*``
and ``needs_*``), hands them over as :class:`Sources`, and gets back the final variables of each
container plus the events to record. Nothing here talks to the API server.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from fractions import Fraction
from typing import Any

from vk_operator.domain.model import Pod
from vk_operator.domain.quantity import parse_quantity

# Event reasons: the virtual-kubelet's (node/env.go), so dashboards and alerts keyed on them keep working.
OPTIONAL_CONFIGMAP_NOT_FOUND = "OptionalConfigMapNotFound"
OPTIONAL_CONFIGMAP_KEY_NOT_FOUND = "OptionalConfigMapKeyNotFound"
FAILED_TO_READ_OPTIONAL_CONFIGMAP = "FailedToReadOptionalConfigMap"
MANDATORY_CONFIGMAP_NOT_FOUND = "MandatoryConfigMapNotFound"
MANDATORY_CONFIGMAP_KEY_NOT_FOUND = "MandatoryConfigMapKeyNotFound"
FAILED_TO_READ_MANDATORY_CONFIGMAP = "FailedToReadMandatoryConfigMap"
OPTIONAL_SECRET_NOT_FOUND = "OptionalSecretNotFound"
OPTIONAL_SECRET_KEY_NOT_FOUND = "OptionalSecretKeyNotFound"
FAILED_TO_READ_OPTIONAL_SECRET = "FailedToReadOptionalSecret"
MANDATORY_SECRET_NOT_FOUND = "MandatorySecretNotFound"
MANDATORY_SECRET_KEY_NOT_FOUND = "MandatorySecretKeyNotFound"
FAILED_TO_READ_MANDATORY_SECRET = "FailedToReadMandatorySecret"
INVALID_ENVIRONMENT_VARIABLE_NAMES = "InvalidEnvironmentVariableNames"
# Ours: the kubelet returns plain errors for these.
UNSUPPORTED_FIELD_PATH = "UnsupportedFieldPath"
POD_IP_NOT_AVAILABLE = "PodIPNotAvailable"
HOST_IP_NOT_AVAILABLE = "HostIPNotAvailable"
INVALID_RESOURCE_FIELD_REF = "InvalidResourceFieldRef"
UNSUPPORTED_ENV_SOURCE = "UnsupportedEnvSource"


@dataclasses.dataclass(frozen=True)
class ReadError:
    """The object exists (maybe) but could not be read, e.g. RBAC forbidden; ``message`` says why."""

    message: str


@dataclasses.dataclass(frozen=True)
class Sources:
    """Everything the core fetched for one pod. Missing object = None; unreadable = ReadError.

    A name absent from ``configmaps``/``secrets`` is treated as missing (None): the core fetches
    ``referenced_configmaps``/``referenced_secrets``, so absence means it does not exist.
    """

    configmaps: Mapping[str, Mapping[str, str] | ReadError | None]  # name -> data (binaryData not for env)
    secrets: Mapping[str, Mapping[str, bytes] | ReadError | None]  # name -> DECODED values
    services: Sequence[Mapping[str, Any]] = ()  # Service objects of the pod's namespace
    master_services: Sequence[Mapping[str, Any]] = ()  # `kubernetes` in `default`: linked even when disabled
    pod_ip: str | None = None
    host_ip: str | None = None
    service_account_token: str | None = None  # from TokenRequest, for projected serviceAccountToken
    node_allocatable: Mapping[str, str] = dataclasses.field(default_factory=dict)  # unset limits default here
    configmap_binary: Mapping[str, Mapping[str, bytes]] = dataclasses.field(default_factory=dict)  # volumes


@dataclasses.dataclass(frozen=True)
class EnvEvent:
    reason: str  # Kubernetes/virtual-kubelet reason string
    message: str  # never contains a secret VALUE (names and keys are fine)
    warning: bool


@dataclasses.dataclass(frozen=True)
class EnvResult:
    containers: Mapping[str, list[dict[str, str]]]  # init and regular container -> [{"name", "value"}]
    secret_vars: frozenset[tuple[str, str]]  # (container, var) whose value came from a Secret
    events: tuple[EnvEvent, ...]
    fatal: EnvEvent | None  # set -> the pod must NOT be created; ``containers`` is then empty


class ResolutionError(Exception):
    """Stops the resolution of a pod; ``event`` is what to report (shared with volumes)."""

    def __init__(self, event: EnvEvent) -> None:
        super().__init__(event.message)
        self.event = event


def _fatal(reason: str, message: str) -> ResolutionError:
    return ResolutionError(EnvEvent(reason, message, warning=True))


# -------- pod walking


def all_containers(pod: Pod) -> list[Mapping[str, Any]]:
    """Init containers then regular ones: the order the kubelet resolves (and runs) them."""
    spec = pod.get("spec") or {}
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]


def _volumes(pod: Pod) -> list[Mapping[str, Any]]:
    return list((pod.get("spec") or {}).get("volumes") or [])


def _value_froms(pod: Pod) -> Iterator[Mapping[str, Any]]:
    for container in all_containers(pod):
        for entry in container.get("env") or []:
            if entry.get("valueFrom"):
                yield entry["valueFrom"]


def _volume_sources(pod: Pod, kind: str) -> Iterator[Mapping[str, Any]]:
    """``configMap``/``secret`` sources of volumes, including those nested in projected volumes."""
    for volume in _volumes(pod):
        if volume.get(kind):
            yield volume[kind]
        for source in (volume.get("projected") or {}).get("sources") or []:
            if source.get(kind):
                yield source[kind]


def referenced_configmaps(pod: Pod) -> set[str]:
    """Every ConfigMap name the pod's env, envFrom and volumes mention (containers and init containers)."""
    names = {
        ref["configMapKeyRef"].get("name", "") for ref in _value_froms(pod) if ref.get("configMapKeyRef")
    }
    for container in all_containers(pod):
        names |= {
            s["configMapRef"].get("name", "") for s in container.get("envFrom") or [] if s.get("configMapRef")
        }
    names |= {source.get("name", "") for source in _volume_sources(pod, "configMap")}
    return names - {""}


def referenced_secrets(pod: Pod) -> set[str]:
    """Every Secret name the pod's env, envFrom and volumes mention (containers and init containers)."""
    names = {ref["secretKeyRef"].get("name", "") for ref in _value_froms(pod) if ref.get("secretKeyRef")}
    for container in all_containers(pod):
        names |= {
            s["secretRef"].get("name", "") for s in container.get("envFrom") or [] if s.get("secretRef")
        }
    # A secret volume names its Secret `secretName`, a projected secret source `name`.
    for volume in _volumes(pod):
        if volume.get("secret"):
            names.add(volume["secret"].get("secretName", ""))
        for source in (volume.get("projected") or {}).get("sources") or []:
            if source.get("secret"):
                names.add(source["secret"].get("name", ""))
    return names - {""}


def needs_pod_ip(pod: Pod) -> bool:
    """Whether some variable is the pod IP: such pods can only start once the IP is known."""
    return any(
        (ref.get("fieldRef") or {}).get("fieldPath") in ("status.podIP", "status.podIPs")
        for ref in _value_froms(pod)
    )


def needs_service_links(pod: Pod) -> bool:
    """spec.enableServiceLinks, which defaults to true."""
    return (pod.get("spec") or {}).get("enableServiceLinks") is not False


def needs_service_account_token(pod: Pod) -> bool:
    return any(
        source.get("serviceAccountToken")
        for volume in _volumes(pod)
        for source in (volume.get("projected") or {}).get("sources") or []
    )


# -------- expansion

_OPERATOR, _OPENER, _CLOSER = "$", "(", ")"


def _expand(text: str, lookup: Callable[[str], str | None]) -> str:
    # A port of k8s.io/kubernetes/third_party/forked/golang/expansion: `$(VAR)` is replaced when VAR
    # is known, kept verbatim otherwise; `$$` is an escaped `$`; any other `$x` is kept as is.
    out: list[str] = []
    checkpoint = 0
    cursor = 0
    while cursor < len(text):
        if text[cursor] == _OPERATOR and cursor + 1 < len(text):
            out.append(text[checkpoint:cursor])
            rest = text[cursor + 1 :]
            if rest[0] == _OPERATOR:
                out.append(_OPERATOR)
                advance = 1
            elif rest[0] == _OPENER:
                closer = rest.find(_CLOSER, 1)
                if closer == -1:
                    out.append(_OPERATOR + _OPENER)  # unterminated: copied, the rest is scanned as text
                    advance = 1
                else:
                    name = rest[1:closer]
                    value = lookup(name)
                    out.append(f"$({name})" if value is None else value)
                    advance = closer + 1
            else:
                out.append(_OPERATOR + rest[0])
                advance = 1
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    out.append(text[checkpoint:])
    return "".join(out)


def expand(text: str, mapping: Mapping[str, str]) -> str:
    """Expand ``$(VAR)`` references in ``text`` with the kubelet's rules."""
    return _expand(text, mapping.get)


def expand_command(
    container: Mapping[str, Any], env: Sequence[Mapping[str, str]]
) -> tuple[list[str], list[str]]:
    """The container's ``command`` and ``args`` with ``$(VAR)`` expanded against its resolved ``env``."""
    mapping = {var["name"]: var["value"] for var in env}
    return (
        [expand(part, mapping) for part in container.get("command") or []],
        [expand(part, mapping) for part in container.get("args") or []],
    )


# -------- downward API

_SUBSCRIPTED = re.compile(r"(metadata\.(?:labels|annotations))\['(.*)'\]", re.DOTALL)
_GO_ESCAPES = {
    "\a": r"\a",
    "\b": r"\b",
    "\f": r"\f",
    "\n": r"\n",
    "\r": r"\r",
    "\t": r"\t",
    "\v": r"\v",
    "\\": r"\\",
    '"': r"\"",
}


def _go_quote(text: str) -> str:
    # Go's %q, which the kubelet's fieldpath.FormatMap uses for label and annotation values.
    out = ['"']
    for char in text:
        code = ord(char)
        if char in _GO_ESCAPES:
            out.append(_GO_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def format_map(values: Mapping[str, str]) -> str:
    """Labels/annotations as the kubelet renders them: ``key="value"`` lines sorted by key."""
    return "\n".join(f"{key}={_go_quote(values[key])}" for key in sorted(values))


def pod_field_value(pod: Pod, field_path: str, sources: Sources, *, runtime: bool, where: str) -> str:
    """A downward-API ``fieldRef`` value. ``runtime`` allows spec/status fields (env only, not volumes)."""
    metadata = pod.get("metadata") or {}
    simple = {"metadata.name": "name", "metadata.namespace": "namespace", "metadata.uid": "uid"}
    if field_path in simple:
        return str(metadata.get(simple[field_path]) or "")
    if field_path in ("metadata.labels", "metadata.annotations"):
        return format_map(metadata.get(field_path.split(".")[1]) or {})
    if subscripted := _SUBSCRIPTED.fullmatch(field_path):
        values = metadata.get(subscripted.group(1).split(".")[1]) or {}
        return str(values.get(subscripted.group(2), ""))
    if runtime:
        spec = pod.get("spec") or {}
        if field_path == "spec.nodeName":
            return str(spec.get("nodeName") or "")
        if field_path == "spec.serviceAccountName":
            return str(spec.get("serviceAccountName") or "")
        if field_path in ("status.podIP", "status.podIPs"):
            if not sources.pod_ip:
                raise _fatal(POD_IP_NOT_AVAILABLE, f"{where} needs {field_path}, but the pod has no IP yet")
            return sources.pod_ip
        if field_path in ("status.hostIP", "status.hostIPs"):
            if not sources.host_ip:
                raise _fatal(HOST_IP_NOT_AVAILABLE, f"{where} needs {field_path}, but the host IP is unknown")
            return sources.host_ip
    raise _fatal(UNSUPPORTED_FIELD_PATH, f"{where} uses unsupported fieldPath {field_path!r}")


_RESOURCE_FIELDS = frozenset(
    f"{kind}.{name}" for kind in ("limits", "requests") for name in ("cpu", "memory", "ephemeral-storage")
)


def resource_field_value(
    pod: Pod, ref: Mapping[str, Any], default_container: str | None, sources: Sources, *, where: str
) -> str:
    """A ``resourceFieldRef`` value: kubelet rounding, unset (or zero) limits default to node allocatable."""
    name = ref.get("containerName") or default_container
    field = str(ref.get("resource") or "")
    container = next((c for c in all_containers(pod) if c.get("name") == name), None)
    if container is None:
        raise _fatal(INVALID_RESOURCE_FIELD_REF, f"{where} refers to unknown container {name!r}")
    if field not in _RESOURCE_FIELDS:
        raise _fatal(INVALID_RESOURCE_FIELD_REF, f"{where} uses unsupported resource {field!r}")
    kind, _, resource = field.partition(".")
    try:
        declared = ((container.get("resources") or {}).get(kind) or {}).get(resource)
        amount = parse_quantity(str(declared)) if declared is not None else Fraction(0)
        if kind == "limits" and amount == 0 and resource in sources.node_allocatable:
            amount = parse_quantity(sources.node_allocatable[resource])
        divisor = parse_quantity(str(ref.get("divisor") or "1")) or Fraction(1)  # kubelet: zero means 1
    except ValueError as error:
        raise _fatal(INVALID_RESOURCE_FIELD_REF, f"{where}: {error}") from None
    if divisor < 0:
        raise _fatal(INVALID_RESOURCE_FIELD_REF, f"{where}: divisor {ref.get('divisor')!r} is negative")
    # Quantity.MilliValue()/Value() round up (so a positive divisor stays >= 1), then the kubelet
    # rounds the quotient up again.
    if resource == "cpu":
        amount, divisor = Fraction(math.ceil(amount * 1000)), Fraction(math.ceil(divisor * 1000))
    else:
        amount, divisor = Fraction(math.ceil(amount)), Fraction(math.ceil(divisor))
    return str(math.ceil(amount / divisor))


# -------- service links


def _service_ip(service: Mapping[str, Any]) -> str:
    ip = str((service.get("spec") or {}).get("clusterIP") or "")
    return "" if ip == "None" else ip


def _env_name(name: str) -> str:
    return name.upper().replace("-", "_")


def _service_vars(service: Mapping[str, Any]) -> list[tuple[str, str]]:
    # k8s.io/kubernetes/pkg/kubelet/envvars.FromServices, for one service.
    ip = _service_ip(service)
    prefix = _env_name(str((service.get("metadata") or {}).get("name") or ""))
    ports = (service.get("spec") or {}).get("ports") or []
    result = [(f"{prefix}_SERVICE_HOST", ip)]
    if not ports:  # not valid for a ClusterIP service, but do not crash on it
        return result
    result.append((f"{prefix}_SERVICE_PORT", str(ports[0].get("port"))))
    result += [
        (f"{prefix}_SERVICE_PORT_{_env_name(p['name'])}", str(p.get("port"))) for p in ports if p.get("name")
    ]
    host = f"[{ip}]" if ":" in ip else ip  # net.JoinHostPort
    for index, port in enumerate(ports):
        number = port.get("port")
        protocol = str(port.get("protocol") or "TCP")
        url = f"{protocol.lower()}://{host}:{number}"
        if index == 0:
            result.append((f"{prefix}_PORT", url))
        port_prefix = f"{prefix}_PORT_{number}_{protocol.upper()}"
        result += [
            (port_prefix, url),
            (f"{port_prefix}_PROTO", protocol.lower()),
            (f"{port_prefix}_PORT", str(number)),
            (f"{port_prefix}_ADDR", ip),
        ]
    return result


def service_link_env(pod: Pod, sources: Sources) -> dict[str, str]:
    """The docker-link variables of the pod's namespace services (if enabled) and the master service."""
    namespace = (pod.get("metadata") or {}).get("namespace") or "default"
    chosen: dict[str, Mapping[str, Any]] = {}
    for service in sources.master_services:
        name = (service.get("metadata") or {}).get("name")
        if name and _service_ip(service):
            chosen.setdefault(name, service)
    if needs_service_links(pod):
        for service in sources.services:
            metadata = service.get("metadata") or {}
            # Like the kubelet, a same-named service of the pod's namespace wins over the master one.
            if (
                metadata.get("name")
                and metadata.get("namespace", namespace) == namespace
                and _service_ip(service)
            ):
                chosen[metadata["name"]] = service
    # The kubelet walks a Go map; sort by name so the result (and its order) is deterministic.
    return {var: value for name in sorted(chosen) for var, value in _service_vars(chosen[name])}


# -------- env


@dataclasses.dataclass(frozen=True)
class _Kind:
    noun: str
    optional_not_found: str
    optional_key_not_found: str
    failed_optional: str
    mandatory_not_found: str
    mandatory_key_not_found: str
    failed_mandatory: str


_CONFIGMAP = _Kind(
    "configmap",
    OPTIONAL_CONFIGMAP_NOT_FOUND,
    OPTIONAL_CONFIGMAP_KEY_NOT_FOUND,
    FAILED_TO_READ_OPTIONAL_CONFIGMAP,
    MANDATORY_CONFIGMAP_NOT_FOUND,
    MANDATORY_CONFIGMAP_KEY_NOT_FOUND,
    FAILED_TO_READ_MANDATORY_CONFIGMAP,
)
_SECRET = _Kind(
    "secret",
    OPTIONAL_SECRET_NOT_FOUND,
    OPTIONAL_SECRET_KEY_NOT_FOUND,
    FAILED_TO_READ_OPTIONAL_SECRET,
    MANDATORY_SECRET_NOT_FOUND,
    MANDATORY_SECRET_KEY_NOT_FOUND,
    FAILED_TO_READ_MANDATORY_SECRET,
)

_ENV_VAR_NAME = re.compile(r"[-._a-zA-Z][-._a-zA-Z0-9]*")  # apimachinery validation.IsEnvVarName

_Data = Mapping[str, str] | Mapping[str, bytes]


def _text(value: str | bytes) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value


def _fetch(
    kind: _Kind,
    objects: Mapping[str, _Data | ReadError | None],
    ref: Mapping[str, Any],
    context: str,
    events: list[EnvEvent],
) -> _Data | None:
    """The referenced object's data; None when optional and unavailable (event recorded)."""
    name = str(ref.get("name") or "")
    found = objects.get(name)
    if isinstance(found, ReadError):
        message = f'{context}: failed to read {kind.noun} "{name}": {found.message}'
        if ref.get("optional") is not True:
            raise _fatal(kind.failed_mandatory, message)
        events.append(EnvEvent(kind.failed_optional, f"{message}; skipped as optional", warning=True))
        return None
    if found is None:
        message = f'{context}: {kind.noun} "{name}" not found'
        if ref.get("optional") is not True:
            raise _fatal(kind.mandatory_not_found, message)
        events.append(EnvEvent(kind.optional_not_found, f"{message}; skipped as optional", warning=False))
        return None
    return found


class _ContainerEnv:
    """Builds one container's variables. ``env`` is a dict: a redefined variable keeps its first
    position and takes the last value, which is the kubelet's "last definition wins"."""

    def __init__(self, pod: Pod, container: Mapping[str, Any], sources: Sources, events: list[EnvEvent]):
        self.pod, self.sources, self.events = pod, sources, events
        self.name = str(container.get("name") or "")
        self.env: dict[str, str] = {}
        self.secret: set[str] = set()

    def set(self, var: str, value: str, secret: bool) -> None:
        self.env[var] = value
        if secret:
            self.secret.add(var)
        else:
            self.secret.discard(var)

    def env_from(self, source: Mapping[str, Any]) -> None:
        prefix = str(source.get("prefix") or "")
        if source.get("configMapRef") is not None:
            kind, ref, secret = _CONFIGMAP, source["configMapRef"], False
            objects: Mapping[str, _Data | ReadError | None] = self.sources.configmaps
        elif source.get("secretRef") is not None:
            kind, ref, secret = _SECRET, source["secretRef"], True
            objects = self.sources.secrets
        else:
            raise _fatal(
                UNSUPPORTED_ENV_SOURCE, f'container "{self.name}" has an envFrom entry of unknown kind'
            )
        data = _fetch(kind, objects, ref, f'container "{self.name}" envFrom', self.events)
        if data is None:
            return
        invalid = []
        for key in sorted(data):  # a Go map in the kubelet: any order is faithful, sorted is stable
            var = prefix + key
            if not _ENV_VAR_NAME.fullmatch(var):
                invalid.append(var)
                continue
            self.set(var, _text(data[key]), secret)
        if invalid:
            message = (
                f'container "{self.name}": keys [{", ".join(invalid)}] from {kind.noun} '
                f'"{ref.get("name", "")}" were skipped since they are invalid as environment variable names'
            )
            self.events.append(EnvEvent(INVALID_ENVIRONMENT_VARIABLE_NAMES, message, warning=True))

    def key_ref(self, kind: _Kind, ref: Mapping[str, Any], var: str) -> str | None:
        objects: Mapping[str, _Data | ReadError | None] = (
            self.sources.secrets if kind is _SECRET else self.sources.configmaps
        )
        context = f'container "{self.name}" envvar "{var}"'
        data = _fetch(kind, objects, ref, context, self.events)
        if data is None:
            return None
        name, key = ref.get("name", ""), str(ref.get("key") or "")
        if key not in data:
            message = f'{context}: key "{key}" does not exist in {kind.noun} "{name}"'
            if ref.get("optional") is not True:
                raise _fatal(kind.mandatory_key_not_found, message)
            message += "; skipped as optional"
            self.events.append(EnvEvent(kind.optional_key_not_found, message, warning=False))
            return None
        return _text(data[key])

    def env_var(self, entry: Mapping[str, Any]) -> None:
        var = str(entry.get("name") or "")
        value_from = entry.get("valueFrom") or {}
        where = f'container "{self.name}" envvar "{var}"'
        if entry.get("value"):  # a literal wins over valueFrom, as in the kubelet
            used: set[str] = set()

            def lookup(name: str) -> str | None:
                used.add(name)
                return self.env.get(name)

            value = _expand(str(entry["value"]), lookup)
            # Expanding a Secret-sourced variable copies its value: keep it secret.
            self.set(var, value, secret=bool(used & self.secret))
        elif not value_from:
            self.set(var, "", secret=False)
        elif value_from.get("configMapKeyRef") is not None:
            found = self.key_ref(_CONFIGMAP, value_from["configMapKeyRef"], var)
            if found is not None:
                self.set(var, found, secret=False)
        elif value_from.get("secretKeyRef") is not None:
            found = self.key_ref(_SECRET, value_from["secretKeyRef"], var)
            if found is not None:
                self.set(var, found, secret=True)
        elif value_from.get("fieldRef") is not None:
            path = str(value_from["fieldRef"].get("fieldPath") or "")
            self.set(var, pod_field_value(self.pod, path, self.sources, runtime=True, where=where), False)
        elif value_from.get("resourceFieldRef") is not None:
            ref = value_from["resourceFieldRef"]
            self.set(var, resource_field_value(self.pod, ref, self.name, self.sources, where=where), False)
        else:
            kinds = ", ".join(sorted(value_from))
            raise _fatal(UNSUPPORTED_ENV_SOURCE, f"{where} uses an unsupported valueFrom ({kinds})")


def resolve_env(pod: Pod, sources: Sources) -> EnvResult:
    """Every container's final environment: service links, then envFrom, then env; last definition wins."""
    events: list[EnvEvent] = []
    links = service_link_env(pod, sources)
    containers: dict[str, list[dict[str, str]]] = {}
    secret_vars: set[tuple[str, str]] = set()
    try:
        for container in all_containers(pod):
            builder = _ContainerEnv(pod, container, sources, events)
            builder.env.update(links)
            for source in container.get("envFrom") or []:
                builder.env_from(source)
            for entry in container.get("env") or []:
                builder.env_var(entry)
            containers[builder.name] = [{"name": k, "value": v} for k, v in builder.env.items()]
            secret_vars |= {(builder.name, var) for var in builder.secret}
    except ResolutionError as error:
        return EnvResult({}, frozenset(), tuple(events), error.event)
    return EnvResult(containers, frozenset(secret_vars), tuple(events), None)

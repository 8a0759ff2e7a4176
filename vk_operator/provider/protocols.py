"""What a provider implements: one required Protocol and optional capabilities.

A provider is a class registered under the ``vk_operator.providers`` entry-point group. The class
itself is the :class:`ProviderFactory` (``config_model``, and a constructor taking the validated
config and the node name); its instances satisfy :class:`Provider`. Optional capabilities are
separate Protocols the core checks at run time (``isinstance``): implement what the backend offers.

Every call the core makes is bounded by a timeout (``--provider-timeout-*``), counted in the
metrics, and held back while the provider is throttled (:class:`~vk_operator.provider.ThrottledError`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

import pydantic

from vk_operator.domain.exec import ExecIO, PortConnection
from vk_operator.domain.logs import LogEntry, LogOptions
from vk_operator.domain.model import Capacity, PodRef, ProviderPodStatus
from vk_operator.domain.prepared import PreparedPod
from vk_operator.domain.stats import PodUsage

ConfigT = TypeVar("ConfigT", bound=pydantic.BaseModel)
ConfigT_contra = TypeVar("ConfigT_contra", bound=pydantic.BaseModel, contravariant=True)
NodeCondition = dict[str, str]  # {"type": ..., "status": "True"|"False"|"Unknown", "reason", "message"}


@runtime_checkable
class Provider(Protocol):
    """The seed's provider interface, async. Every method is called by the core.

    Pods are identified by :class:`PodRef` (namespace, name, UID); the UID is the ownership key:
    tag what you create with it and the node name, so :meth:`list_pods` finds exactly this node's
    pods again after a restart.
    """

    name: ClassVar[str]

    async def create_pod(self, pod: PreparedPod) -> None:
        """Start the pod and return once the backend accepted it (do not wait for it to run).

        Idempotent: a create of a pod (UID) the backend already has succeeds without a second one.
        """

    async def update_pod(self, pod: PreparedPod) -> None:
        """Apply a spec change (images, activeDeadlineSeconds...); raise PermanentError when the
        backend cannot change it in place (the pod keeps running; the user gets a Warning Event)."""

    async def delete_pod(self, ref: PodRef) -> None:
        """Stop and remove the pod; return once the backend confirms it is stopped. A pod the
        backend does not have is already deleted: return (or raise NotFoundError)."""

    async def get_pod_status(self, ref: PodRef) -> ProviderPodStatus | None:
        """The pod's status, or None when the backend does not have it."""

    async def list_pods(self) -> list[PodRef]:
        """Every pod the backend runs for this node (found by ownership tags), and nothing else."""

    async def capacity(self) -> Capacity:
        """What the node offers; read on every node status refresh, never per pod."""

    async def node_conditions(self) -> list[NodeCondition]:
        """Node conditions to add to or override the defaults (all healthy); [] for none."""


class ProviderFactory(Protocol[ConfigT]):
    """The provider class: its config model and its constructor (cheap: no I/O; see Startable)."""

    name: ClassVar[str]

    @property
    def config_model(self) -> type[ConfigT]: ...

    def __call__(self, config: ConfigT, node_name: str) -> Provider: ...


# -- lifecycle ---------------------------------------------------------------------------------------
@runtime_checkable
class Startable(Protocol):
    """Capability: async start-up before anything is registered (credentials, clients, pre-flight
    checks). Raise ProviderError with one clear line when the provider cannot run: start-up fails
    with that line (exit code 1) and nothing is registered."""

    async def start(self) -> None: ...


@runtime_checkable
class Closeable(Protocol):
    """Capability: release clients and flush state at shutdown."""

    async def close(self) -> None: ...


@runtime_checkable
class ConfigurableProvider(Protocol[ConfigT_contra]):
    """Capability: apply a new validated config (from a watched ConfigMap) without a restart."""

    async def reconfigure(self, config: ConfigT_contra) -> None: ...


# -- status ------------------------------------------------------------------------------------------
StatusCallback = Callable[[PodRef], None]


@runtime_checkable
class PodNotifier(Protocol):
    """Capability: the provider pushes status changes (``callback(ref)``) instead of being polled."""

    def notify_pods(self, callback: StatusCallback) -> None: ...


@runtime_checkable
class BulkStatusProvider(Protocol):
    """Capability: the status of all of this node's pods in one call (ACI's list, ECS's
    ListTasks + DescribeTasks by 100, Batch's list_tasks).

    Keyed by pod UID; a pod the backend does not have is left out (the core treats it as gone).
    The core polls it on an interval that is short while pods are in transition and long when all
    are steady, within ``--status-poll-budget`` calls a minute, instead of ``get_pod_status`` per pod.
    """

    async def get_pod_statuses(self) -> Mapping[str, ProviderPodStatus]: ...


# -- events ------------------------------------------------------------------------------------------
class PodEventRecorder(Protocol):
    """Given to an :class:`EventEmitter` by the core: a Kubernetes Event on one of the node's pods.

    The core aggregates repeats (same reason and message: one Event, its count raised) and
    rate-limits a chatty pod, as for its own Events; an Event about a pod the node does not track
    is dropped. Never put a secret value in ``message``.
    """

    def record(self, ref: PodRef, reason: str, message: str, *, warning: bool = False) -> None: ...


@runtime_checkable
class EventEmitter(Protocol):
    """Capability: the provider has Events to tell about its pods (the backend's own events, a
    probe or field it cannot express). ``emit_events`` is called once, before ``start``."""

    def emit_events(self, recorder: PodEventRecorder) -> None: ...


@runtime_checkable
class PodIPAllocator(Protocol):
    """Capability: the provider knows a pod's IP before creating it (for status.podIP env vars)."""

    async def allocate_pod_ip(self, ref: PodRef) -> str: ...


@runtime_checkable
class VolumeTypesProvider(Protocol):
    """Capability: volume types the provider mounts itself, beyond the five the core resolves
    (configMap, secret, projected, downwardAPI, emptyDir).

    Names are the pod's volume source keys (``azureFile``, ``gitRepo``, ``nfs``...) or, for CSI,
    ``csi:<driver>`` (``csi:file.csi.azure.com``). Such volumes reach the provider as a
    ResolvedVolume with ``kind`` the source key and ``source`` the pod's volume source; any other
    type still fails the pod naming the volume.
    """

    volume_types: ClassVar[frozenset[str]]


# -- the kubelet API -------------------------------------------------------------------------------
@runtime_checkable
class LogsProvider(Protocol):
    """Capability: container logs, served by ``GET /containerLogs`` (``kubectl logs``).

    Yield the entries of container ``container`` of ``ref`` (of its previous instance when
    ``options.previous``), oldest first, honouring ``options.tail_lines`` and ``options.since(now)``
    (the core filters ``since`` again and applies ``limit_bytes`` and ``timestamps`` itself). With
    ``options.follow`` keep yielding new entries as they are written and return when the container
    instance ends. Raise ``LogsUnavailable`` when the container has no such logs (not started yet,
    no previous instance) and ``KeyError`` when the provider does not know the pod or container.
    """

    def container_logs(self, ref: PodRef, container: str, options: LogOptions) -> AsyncIterator[LogEntry]: ...


@runtime_checkable
class ExecProvider(Protocol):
    """Capability: run a command in a running container (``kubectl exec``, ``/exec/...``).

    Run ``command`` (argv, never through a shell unless it names one) in container ``container``
    of ``ref``, pump ``io.stdin`` to it and its output to ``io.write_stdout``/``io.write_stderr``
    until it ends, and return its exit code (``None`` when the backend cannot report one, as with
    ACI's exec websocket: counted as success). The stream ends the session: return once the
    command has finished and its output is written. With ``io.tty`` follow ``io.resize``.
    Raise ``KeyError`` when the provider does not know the pod or container and ``ExecError``
    when the command cannot be started (container not running...). Cancellation means the
    client went away: stop the command if the backend allows.
    """

    async def exec_in_container(
        self, ref: PodRef, container: str, command: Sequence[str], io: ExecIO
    ) -> int | None: ...


@runtime_checkable
class AttachProvider(Protocol):
    """Capability: attach to a running container's main process (``kubectl attach``, ``/attach/...``).

    Stream what the process writes from now on to ``io.write_stdout``/``io.write_stderr``, and
    ``io.stdin`` (when given) to its stdin, until the container stops (return) or the client goes
    away (cancellation; the process keeps running). Raise ``KeyError`` when the provider does not
    know the pod or container and ``ExecError`` when it is not running.
    """

    async def attach_container(self, ref: PodRef, container: str, io: ExecIO) -> None: ...


@runtime_checkable
class PortForwardProvider(Protocol):
    """Capability: TCP connections to a port of the pod (``kubectl port-forward``, ``/portForward``).

    Connect to ``port`` of ``ref`` (its network namespace, as the kubelet does: any port, declared
    or not), copy ``connection.incoming`` to it and what it sends back to ``connection.send``, and
    return once both directions are done (the pod side closed, or the client closed and the pod
    answered). Called once per forwarded connection, concurrently. Raise ``PortForwardError`` when
    the port cannot be reached and ``KeyError`` when the provider does not know the pod.
    """

    async def port_forward(self, ref: PodRef, port: int, connection: PortConnection) -> None: ...


@runtime_checkable
class StatsProvider(Protocol):
    """Capability: CPU and memory usage of the running pods (``/stats/summary``, ``/metrics/resource``)."""

    async def pod_stats(self) -> list[PodUsage]: ...


@runtime_checkable
class Pinger(Protocol):
    """Capability: a cheap reachability check of the backend (``/readyz``); raise when unreachable."""

    async def ping(self) -> None: ...


def declared_volume_types(provider: object) -> frozenset[str]:
    """The volume types ``provider`` declares (VolumeTypesProvider), else none."""
    types: Any = getattr(provider, "volume_types", frozenset())
    return frozenset(types)

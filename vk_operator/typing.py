"""The public Protocols: what a provider implements, gathered in one place.

A provider is any class registered under the ``vk_operator.providers`` entry-point group that
satisfies :class:`Provider`; optional capabilities are separate Protocols checked at runtime.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, ClassVar, Protocol, runtime_checkable

import pydantic

from vk_operator.domain.exec import ExecIO, PortConnection
from vk_operator.domain.logs import LogEntry, LogOptions
from vk_operator.domain.model import Capacity, Pod, PodRef, ProviderPodStatus
from vk_operator.domain.prepared import PreparedPod
from vk_operator.domain.stats import PodUsage


@runtime_checkable
class Provider(Protocol):
    """The seed's provider interface, async.

    Create and update receive a PreparedPod (env resolved, volume contents attached); delete and
    status calls identify the pod (delete may get only its metadata, for orphans).
    """

    name: ClassVar[str]
    config_model: ClassVar[type[pydantic.BaseModel]]

    async def create_pod(self, pod: PreparedPod) -> None:
        """Start the pod; raise ProviderError (permanent=True when retrying cannot help)."""

    async def update_pod(self, pod: PreparedPod) -> None:
        """Apply a spec change; raise ProviderError when the change is not supported."""

    async def delete_pod(self, pod: Pod) -> None:
        """Stop and remove the pod; returns once the provider confirms it is stopped."""

    async def get_pod_status(self, ref: PodRef) -> ProviderPodStatus | None:
        """The pod's status, or None when the provider does not have it."""

    async def list_pods(self) -> list[PodRef]:
        """Every pod this provider runs for this node (found by ownership tags)."""

    async def capacity(self) -> Capacity: ...

    async def node_conditions(self) -> list[dict[str, str]]: ...

    def operating_system(self) -> str: ...


class ProviderFactory(Protocol):
    name: ClassVar[str]
    config_model: ClassVar[type[pydantic.BaseModel]]

    def __call__(self, config: Any, node_name: str) -> Provider: ...


StatusCallback = Callable[[PodRef], None]


@runtime_checkable
class PodNotifier(Protocol):
    """Capability: the provider pushes status changes instead of being polled."""

    def notify_pods(self, callback: StatusCallback) -> None: ...


@runtime_checkable
class PodIPAllocator(Protocol):
    """Capability: the provider knows a pod's IP before creating it (for status.podIP env vars)."""

    async def allocate_pod_ip(self, ref: PodRef) -> str: ...


@runtime_checkable
class ConfigurableProvider(Protocol):
    """Capability: the provider applies a new config section without a restart."""

    async def reconfigure(self, config: Any) -> None: ...


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


@runtime_checkable
class Closeable(Protocol):
    async def close(self) -> None: ...

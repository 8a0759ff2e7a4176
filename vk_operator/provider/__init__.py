"""The provider SDK: everything a provider author imports from vk-operator.

A provider depends on this package and its own cloud SDK, nothing else of ours (an import-linter
contract keeps it so). The guide is ``docs/providers.md``; ``vk_operator.provider.testing`` is the
contract test kit every provider runs against its backend.
"""

from vk_operator.domain.errors import (
    ExecError,
    InvalidPodError,
    LogsUnavailable,
    NotFoundError,
    PermanentError,
    PortForwardError,
    ProviderError,
    ProviderTimeoutError,
    ThrottledError,
    TransientError,
    UnexpectedProviderError,
)
from vk_operator.domain.exec import ExecIO, PortConnection, TerminalSize
from vk_operator.domain.logs import LogEntry, LogOptions
from vk_operator.domain.model import (
    Capacity,
    ContainerPhase,
    ContainerStatus,
    Pod,
    PodCondition,
    PodPhase,
    PodRef,
    ProviderPodStatus,
    TerminatedState,
)
from vk_operator.domain.packed import pack as pack_pod
from vk_operator.domain.packed import unpack as unpack_pod
from vk_operator.domain.prepared import PreparedPod
from vk_operator.domain.quantity import parse_quantity
from vk_operator.domain.registry import RegistryCredential
from vk_operator.domain.stats import ContainerUsage, PodUsage
from vk_operator.domain.volumes import ResolvedVolume
from vk_operator.provider.config import Quantity
from vk_operator.provider.protocols import (
    AttachProvider,
    BulkStatusProvider,
    Closeable,
    ConfigurableProvider,
    EventEmitter,
    ExecProvider,
    LogsProvider,
    NodeCondition,
    Pinger,
    PodEventRecorder,
    PodIPAllocator,
    PodNotifier,
    PortForwardProvider,
    Provider,
    ProviderFactory,
    Startable,
    StatsProvider,
    StatusCallback,
    VolumeTypesProvider,
    declared_volume_types,
)

__all__ = [
    "AttachProvider",
    "BulkStatusProvider",
    "Capacity",
    "Closeable",
    "ConfigurableProvider",
    "ContainerPhase",
    "ContainerStatus",
    "ContainerUsage",
    "EventEmitter",
    "ExecError",
    "ExecIO",
    "ExecProvider",
    "InvalidPodError",
    "LogEntry",
    "LogOptions",
    "LogsProvider",
    "LogsUnavailable",
    "NodeCondition",
    "NotFoundError",
    "PermanentError",
    "Pinger",
    "Pod",
    "PodCondition",
    "PodEventRecorder",
    "PodIPAllocator",
    "PodNotifier",
    "PodPhase",
    "PodRef",
    "PodUsage",
    "PortConnection",
    "PortForwardError",
    "PortForwardProvider",
    "PreparedPod",
    "Provider",
    "ProviderError",
    "ProviderFactory",
    "ProviderPodStatus",
    "ProviderTimeoutError",
    "Quantity",
    "RegistryCredential",
    "ResolvedVolume",
    "Startable",
    "StatsProvider",
    "StatusCallback",
    "TerminalSize",
    "TerminatedState",
    "ThrottledError",
    "TransientError",
    "UnexpectedProviderError",
    "VolumeTypesProvider",
    "declared_volume_types",
    "pack_pod",
    "parse_quantity",
    "unpack_pod",
]

"""Wiring: one VirtualKubelet = API client + provider + node agent + pod controller (+ kubelet API)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import platform
import time
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import aiohttp

from vk_operator import __version__, memory
from vk_operator import provider_config as provider_config_source
from vk_operator.config import ConfigError, ProviderStartError, Settings, load_provider_factory
from vk_operator.domain.errors import ProviderError
from vk_operator.domain.node import NodeIdentity
from vk_operator.guard import CallTimeouts, ProviderGuard
from vk_operator.kube import ApiError, Kube
from vk_operator.kubelet_api.service import KubeletAPI
from vk_operator.kubelet_api.tls import TLSConfigError
from vk_operator.node.agent import NodeAgent
from vk_operator.pods.backoff import Backoff
from vk_operator.pods.controller import PodController
from vk_operator.provider import Closeable, ConfigurableProvider, Provider, Startable

log = logging.getLogger(__name__)
T = TypeVar("T")
P = ParamSpec("P")

KUBELET_VERSION = f"v1.37.0-vk-{__version__}"
# At exit (seconds after the stop signal): reconciles under way may finish until IN_FLIGHT_GRACE,
# then are cancelled; Events still queued are posted until EVENT_FLUSH_BY if the API server lets us.
IN_FLIGHT_GRACE = 1.0
EVENT_FLUSH_BY = 1.5
NODE_REMOVAL_TIMEOUT = 3.0  # --remove-node-on-exit: the DELETE, on top
PROVIDER_CLOSE_TIMEOUT = 5.0  # a Closeable provider's close, on top


_UNAVAILABLE = frozenset({502, 503, 504})  # an API server starting up, or a proxy without one


def _unreachable(record: logging.LogRecord) -> bool:
    """Whether a log record reports a failure to reach the API server (not an answer it gave)."""
    args = record.args if isinstance(record.args, tuple) else ()
    return any(
        isinstance(arg, aiohttp.ClientConnectionError | ConnectionError | TimeoutError)
        or (isinstance(arg, ApiError) and arg.status in _UNAVAILABLE)
        for arg in args
    )


class ApiOutageLog(logging.Filter):
    """An API server outage is one WARNING line, from whichever part notices it first (the node
    heartbeat, the node status loop, the resync, an Event, kopf's pod watch...), and the
    heartbeat's INFO line when it renews again. Meanwhile the others' failures to reach the API
    server are DEBUG: each loop would otherwise say so at every period of a long outage."""

    LOGGERS = (
        "vk_operator.node.agent",
        "vk_operator.pods.controller",
        "vk_operator.pods.reconciler",
        "vk_operator.pods.events",
        "vk_operator.pods.polling",
        "vk_operator.pods.sources",
        "vk_operator.provider_config",
    )
    SUFFIX = " (API server unreachable: further failures to reach it are DEBUG until it answers again)"

    def __init__(self, last_heartbeat: Callable[[], float | None]) -> None:
        super().__init__()
        self._last_heartbeat = last_heartbeat
        self._reported = False
        self._heartbeat_then: float | None = None  # the last renewal before the outage

    @property
    def reported(self) -> bool:
        """Whether an outage has been reported that no lease renewal has ended since."""
        if self._reported and self._last_heartbeat() != self._heartbeat_then:
            self._reported = False
        return self._reported

    def report(self) -> bool:
        """A failure to reach the API server: True when it is the first of an outage."""
        if self.reported:
            return False
        self._reported, self._heartbeat_then = True, self._last_heartbeat()
        return True

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING or record.levelno >= logging.ERROR or not _unreachable(record):
            return True
        if self.report():
            record.msg = f"{record.msg}{self.SUFFIX}"
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)

    def install(self) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).addFilter(self)

    def uninstall(self) -> None:
        for name in self.LOGGERS:
            logging.getLogger(name).removeFilter(self)


class _StoppableGuard(ProviderGuard):
    """The provider guard, which once stopping refuses the calls that start new work."""

    NEW_WORK = frozenset({"create_pod", "update_pod"})

    def __init__(self, timeouts: CallTimeouts | None = None) -> None:
        super().__init__(timeouts)
        self.stopping = False

    async def call(
        self,
        method: str,
        fn: Callable[P, Awaitable[T]],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        if self.stopping and method in self.NEW_WORK:
            # As if the reconcile had been cancelled right here: nothing recorded, nothing written.
            raise asyncio.CancelledError(f"stopping: no new provider {method}")
        return await super().call(method, fn, *args, **kwargs)


def _architecture() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


class VirtualKubelet:
    """Everything but the pod watch, which kopf runs and feeds into ``pods.observe``."""

    def __init__(self, settings: Settings, kube: Kube, provider: Provider) -> None:
        self.settings = settings
        self.kube = kube
        self.provider = provider
        self.guard = _StoppableGuard(settings.call_timeouts)
        self.identity = NodeIdentity(
            name=settings.nodename,
            provider=settings.provider,
            operating_system=settings.os.value.lower(),
            architecture=_architecture(),
            internal_ip=settings.node_ip,
            kubelet_port=settings.kubelet_port,
            kubelet_version=KUBELET_VERSION,
            taint=settings.taint or None,
        )
        self.node = NodeAgent(
            kube,
            provider,
            self.identity,
            lease_duration=settings.lease_duration,
            lease_renew_interval=settings.lease_renew_interval,
            status_interval=settings.node_status_interval,
            guard=self.guard,
        )
        self.pods = PodController(
            kube,
            provider,
            settings.nodename,
            settings.node_ip,
            namespace=settings.namespace,
            workers=settings.pod_workers,
            resync_interval=settings.resync_interval,
            relist_interval=settings.relist_interval,
            status_poll_interval=settings.status_poll_interval,
            status_poll_fast=settings.status_poll_fast,
            status_poll_slow=settings.status_poll_slow,
            status_poll_budget=settings.status_poll_budget,
            backoff=Backoff(settings.retry_initial, settings.retry_cap, settings.pod_create_deadline),
            event_qps=settings.event_qps,
            event_burst=settings.event_burst,
            guard=self.guard,
            allocatable=self.node.allocatable,
        )
        # After an outage, pods force-deleted meanwhile may never be reported by the watch.
        self.node.on_reconnected = self.pods.request_relist
        self.kubelet_api = KubeletAPI(
            settings,
            kube,
            provider,
            pods=lambda: self.pods.pods,
            queue_depth=lambda: self.pods.queue_depth,
            tracked_pods=lambda: self.pods.store.in_provider,
            events_pending=lambda: self.pods.events.pending,
            node_uid=lambda: self.node.node_uid,
            last_heartbeat=lambda: self.node.last_heartbeat,
            guard=self.guard,
            allocatable=self.node.allocatable,
        )
        self._tasks: list[asyncio.Task[Any]] = []
        self._stopping_at: float | None = None  # time.monotonic() of the stop signal
        self.outage = ApiOutageLog(lambda: self.node.last_heartbeat)
        self.config_watcher: provider_config_source.ConfigMapWatcher | None = None

    @classmethod
    async def from_settings(cls, settings: Settings) -> VirtualKubelet:
        """Validate everything that can be wrong before anything is registered."""
        factory = load_provider_factory(settings.provider)
        kube = await Kube.connect(settings.kubeconfig, settings.client_qps, settings.client_burst)
        try:
            provider_config, configmap = await provider_config_source.load(
                factory, settings.provider_config, kube
            )
        except BaseException:
            await kube.close()
            raise
        provider = factory(provider_config, settings.nodename)
        if isinstance(provider, Startable):
            try:
                await ProviderGuard(settings.call_timeouts).call("start", provider.start)
            except ProviderError as exc:
                await kube.close()
                raise ProviderStartError(f"provider {settings.provider} cannot start: {exc}") from exc
        vk = cls(settings, kube, provider)
        ref = provider_config_source.ConfigMapRef.parse(settings.provider_config)
        if ref is not None and configmap is not None:
            vk.config_watcher = provider_config_source.ConfigMapWatcher(
                kube, factory, ref, configmap, vk.apply_provider_config, vk.pods.events
            )
        return vk

    async def apply_provider_config(self, config: Any) -> None:
        """A new, valid provider config: applied live where the provider allows it."""
        if not isinstance(self.provider, ConfigurableProvider):
            raise ConfigError(f"provider {self.settings.provider} cannot change its config without a restart")
        await self.provider.reconfigure(config)
        self.node.request_status_refresh()  # capacity may have changed

    async def start(self) -> None:
        self.outage.install()
        # The kubelet API listens before the Node advertises its port (the real port if 0 was asked).
        try:
            port = await self.kubelet_api.start()
        except TLSConfigError as exc:
            raise ConfigError(str(exc)) from exc
        if port != self.identity.kubelet_port:
            self.identity = self.node.identity = dataclasses.replace(self.identity, kubelet_port=port)
        await self.node.register()
        await self.node.renew_lease()
        if self.settings.remove_node_on_exit:
            await self._check_node_removal()
        # Every long-lived task exists before kopf starts: kopf treats tasks created after its
        # start as its own and waits 5 s for them at exit.
        self._tasks += [
            asyncio.create_task(self.node.run_heartbeat(), name="node-heartbeat"),
            asyncio.create_task(self.node.run_status(), name="node-status"),
            *self.pods.start(),
            asyncio.create_task(memory.release_after_bursts(lambda: self.pods.activity), name="memory"),
            *self.kubelet_api.background(),
        ]
        if self.config_watcher is not None:
            self._tasks.append(asyncio.create_task(self.config_watcher.run(), name="provider-config-watch"))

    async def _check_node_removal(self) -> None:
        """--remove-node-on-exit needs ``delete`` on the Node: say at start-up if we lack it."""
        name = self.identity.name
        try:
            allowed, reason = await self.node.may_deregister()
        except Exception as exc:
            log.warning("--remove-node-on-exit: cannot check whether we may delete nodes/%s: %s", name, exc)
            return
        if not allowed:
            log.warning(
                "--remove-node-on-exit: this identity may not delete nodes/%s (missing RBAC: verb delete on "
                'resource nodes, apiGroup ""; a system:node identity never has it%s); the Node will be '
                "left registered at exit",
                name,
                f"; authorizer: {reason}" if reason else "",
            )

    def refuse_new_work(self) -> None:
        """The stop signal, at once (flags only: safe in a signal handler, wherever the loop is):
        from now on no worker takes another pod and no provider create or update starts."""
        if self._stopping_at is None:
            self._stopping_at = time.monotonic()
        self.guard.stopping = True
        self.pods.draining = True

    def begin_shutdown(self) -> None:
        """The stop signal, in the loop: ``refuse_new_work`` and end the idle workers; ``stop``
        bounds what is under way."""
        self.refuse_new_work()
        self.pods.stop_accepting()

    def _left(self, seconds_after_signal: float) -> float:
        assert self._stopping_at is not None
        return max(0.0, self._stopping_at + seconds_after_signal - time.monotonic())

    async def stop(self) -> None:
        self.begin_shutdown()
        await self.kubelet_api.stop()
        busy = [task for task in self.pods.worker_tasks if not task.done()]
        if busy:
            _, late = await asyncio.wait(busy, timeout=self._left(IN_FLIGHT_GRACE))
            if late:
                log.info("stopping: %d pod reconciles still under way are abandoned", len(late))
        # Events already recorded (a deletion's, say) are posted if the API server lets us soon.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._left(EVENT_FLUSH_BY)):
                await self.pods.events.flush()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self.settings.remove_node_on_exit:
            try:
                async with asyncio.timeout(NODE_REMOVAL_TIMEOUT):
                    await self.node.deregister()
                log.info("removed node %s", self.identity.name)
            except Exception as exc:
                log.warning("cannot remove node %s: %s", self.identity.name, exc or type(exc).__name__)
        if isinstance(self.provider, Closeable):
            try:
                async with asyncio.timeout(PROVIDER_CLOSE_TIMEOUT):
                    await self.provider.close()
            except Exception as exc:
                log.warning("provider close failed: %s", exc or type(exc).__name__)
        await self.kube.close()
        self.kubelet_api.close()
        self.outage.uninstall()

    @property
    def field_selector(self) -> str:
        return f"spec.nodeName={self.settings.nodename}"

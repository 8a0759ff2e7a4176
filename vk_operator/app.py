"""Wiring: one VirtualKubelet = API client + provider + node agent + pod controller (+ kubelet API)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import platform
from typing import Any

from vk_operator import __version__, memory
from vk_operator import provider_config as provider_config_source
from vk_operator.config import ConfigError, ProviderStartError, Settings, load_provider_factory
from vk_operator.domain.errors import ProviderError
from vk_operator.domain.node import NodeIdentity
from vk_operator.guard import ProviderGuard
from vk_operator.kube import Kube
from vk_operator.kubelet_api.service import KubeletAPI
from vk_operator.kubelet_api.tls import TLSConfigError
from vk_operator.node.agent import NodeAgent
from vk_operator.pods.backoff import Backoff
from vk_operator.pods.controller import PodController
from vk_operator.provider import Closeable, ConfigurableProvider, Provider, Startable

log = logging.getLogger(__name__)

KUBELET_VERSION = f"v1.37.0-vk-{__version__}"
_EVENT_FLUSH_SECONDS = 2.0  # at exit: post the Events still queued, if the API server lets us soon


def _architecture() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


class VirtualKubelet:
    """Everything but the pod watch, which kopf runs and feeds into ``pods.observe``."""

    def __init__(self, settings: Settings, kube: Kube, provider: Provider) -> None:
        self.settings = settings
        self.kube = kube
        self.provider = provider
        self.guard = ProviderGuard(settings.call_timeouts)
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
        # The kubelet API listens before the Node advertises its port (the real port if 0 was asked).
        try:
            port = await self.kubelet_api.start()
        except TLSConfigError as exc:
            raise ConfigError(str(exc)) from exc
        if port != self.identity.kubelet_port:
            self.identity = self.node.identity = dataclasses.replace(self.identity, kubelet_port=port)
        await self.node.register()
        await self.node.renew_lease()
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

    async def stop(self) -> None:
        await self.kubelet_api.stop()
        # Events already recorded (a deletion's, say) are posted if the API server lets us soon.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_EVENT_FLUSH_SECONDS):
                await self.pods.events.flush()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self.settings.remove_node_on_exit:
            try:
                await self.node.deregister()
                log.info("removed node %s", self.identity.name)
            except Exception as exc:
                log.warning("cannot remove node %s: %s", self.identity.name, exc)
        if isinstance(self.provider, Closeable):
            await self.provider.close()
        await self.kube.close()
        self.kubelet_api.close()

    @property
    def field_selector(self) -> str:
        return f"spec.nodeName={self.settings.nodename}"

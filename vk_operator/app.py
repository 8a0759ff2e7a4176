"""Wiring: one VirtualKubelet = API client + provider + node agent + pod controller (+ kubelet API)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import platform
from typing import Any

from vk_operator import __version__
from vk_operator.config import Settings, load_provider_config, load_provider_factory
from vk_operator.domain.node import NodeIdentity
from vk_operator.kube import Kube
from vk_operator.node.agent import NodeAgent
from vk_operator.pods.controller import Backoff, PodController
from vk_operator.typing import Closeable, Provider

log = logging.getLogger(__name__)

KUBELET_VERSION = f"v1.37.0-vk-{__version__}"


def _architecture() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


class VirtualKubelet:
    """Everything but the pod watch, which kopf runs and feeds into ``pods.observe``."""

    def __init__(self, settings: Settings, kube: Kube, provider: Provider) -> None:
        self.settings = settings
        self.kube = kube
        self.provider = provider
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
        )
        self.pods = PodController(
            kube,
            provider,
            settings.nodename,
            settings.node_ip,
            namespace=settings.namespace,
            workers=settings.pod_workers,
            resync_interval=settings.resync_interval,
            backoff=Backoff(settings.retry_initial, settings.retry_cap, settings.pod_create_deadline),
        )
        self._tasks: list[asyncio.Task[Any]] = []

    @classmethod
    async def from_settings(cls, settings: Settings) -> VirtualKubelet:
        """Validate everything that can be wrong before anything is registered."""
        factory = load_provider_factory(settings.provider)
        provider_config = load_provider_config(factory, settings.provider_config)
        kube = await Kube.connect(settings.kubeconfig, settings.client_qps, settings.client_burst)
        return cls(settings, kube, factory(provider_config, settings.nodename))

    async def start(self) -> None:
        await self.node.register()
        await self.node.renew_lease()
        # Every long-lived task exists before kopf starts: kopf treats tasks created after its
        # start as its own and waits 5 s for them at exit.
        self._tasks += [
            asyncio.create_task(self.node.run_heartbeat(), name="node-heartbeat"),
            asyncio.create_task(self.node.run_status(), name="node-status"),
            *self.pods.start(),
        ]

    async def stop(self) -> None:
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

    @property
    def field_selector(self) -> str:
        return f"spec.nodeName={self.settings.nodename}"

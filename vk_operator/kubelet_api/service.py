"""Everything the kubelet API needs, built from Settings: TLS, authn/authz, the two servers, metrics.

The wiring (``app.py``) hands in read-only views of the controllers as callables, so this package
depends on neither the node agent nor the pod controller.
"""

from __future__ import annotations

import asyncio
import logging
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

from vk_operator import metrics
from vk_operator.config import Settings
from vk_operator.domain.model import Pod
from vk_operator.domain.pod_meta import Key
from vk_operator.guard import ProviderGuard
from vk_operator.kube import Kube
from vk_operator.kubelet_api.auth import Authenticator, Authorizer
from vk_operator.kubelet_api.connections import ConnectionLimits
from vk_operator.kubelet_api.ops import Check, OpsServer
from vk_operator.kubelet_api.server import KubeletServer
from vk_operator.kubelet_api.tls import CSRRequester, ServingCertificate
from vk_operator.provider import Pinger, Provider

log = logging.getLogger(__name__)

PING_TIMEOUT = 5.0


def default_client_ca(kube: Kube) -> str | None:
    """The kubeconfig's cluster CA: it signs the apiserver's kubelet client certificate in kubeadm-
    style clusters (and ours). Any user it certifies is still authorized per request."""
    ca = getattr(kube.configuration, "ssl_ca_cert", None)
    return str(ca) if ca and pathlib.Path(str(ca)).is_file() else None


def _phase_counts(cache: Any) -> Mapping[str, int]:
    """Pods by phase; the pod cache counts without decoding pods (a scrape must stay cheap)."""
    counter = getattr(cache, "phase_counts", None)
    return counter() if counter is not None else metrics.pods_by_phase(cache.values())


class KubeletAPI:
    def __init__(
        self,
        settings: Settings,
        kube: Kube,
        provider: Provider,
        *,
        pods: Callable[[], Mapping[Key, Pod]],
        queue_depth: Callable[[], int],
        tracked_pods: Callable[[], int],
        events_pending: Callable[[], int],
        node_uid: Callable[[], str | None],
        last_heartbeat: Callable[[], float | None],
        guard: ProviderGuard | None = None,
        allocatable: Callable[[], Mapping[str, str]] = dict,
    ) -> None:
        self.settings = settings
        self.kube = kube
        self.provider = provider
        self._last_heartbeat = last_heartbeat
        self._node_uid = node_uid
        client_ca = settings.client_ca_file or default_client_ca(kube)
        self.serving = ServingCertificate(
            node_name=settings.nodename,
            node_ip=settings.node_ip,
            cert_file=settings.tls_cert_file,
            key_file=settings.tls_key_file,
            secret=settings.tls_secret,
            client_ca_file=client_ca,
            reload_interval=settings.tls_reload_interval,
        )
        self.authenticator = Authenticator(
            kube,
            anonymous=settings.anonymous_auth,
            cache_ttl=settings.authentication_token_webhook_cache_ttl,
        )
        self.authorizer = Authorizer(
            kube,
            allowed_ttl=settings.authorization_webhook_cache_authorized_ttl,
            denied_ttl=settings.authorization_webhook_cache_unauthorized_ttl,
        )
        self.limits = ConnectionLimits(
            max_connections=settings.kubelet_api_max_connections,
            first_request_timeout=settings.kubelet_api_first_request_timeout,
            header_timeout=settings.kubelet_api_header_timeout,
            idle_timeout=settings.kubelet_api_idle_timeout,
        )
        self.server = KubeletServer(
            node_name=settings.nodename,
            provider=provider,
            pods=pods,
            serving=self.serving,
            authenticator=self.authenticator,
            authorizer=self.authorizer,
            address=settings.address,
            port=settings.kubelet_port,
            guard=guard,
            allocatable=allocatable,
            limits=self.limits,
        )
        self.guard = self.server.guard
        self.csr = CSRRequester(kube, self.serving, self_approve=settings.serving_cert_self_approve)
        self.state = metrics.StateCollector(
            phase_counts=lambda: _phase_counts(pods()),
            queue_depth=queue_depth,
            heartbeat_age=self.heartbeat_age,
            api_requests=lambda: kube.requests,
            tracked_pods=tracked_pods,
            events_pending=events_pending,
        )
        self.ops: OpsServer | None = None
        if settings.metrics_port:
            self.ops = OpsServer(
                address=settings.address, port=settings.metrics_port, checks=self.checks(), limits=self.limits
            )
        self.client_ca = client_ca

    # -- readiness ---------------------------------------------------------------------------------
    def heartbeat_age(self) -> float | None:
        last = self._last_heartbeat()
        return None if last is None else asyncio.get_running_loop().time() - last

    def checks(self) -> dict[str, Check]:
        async def registered() -> str | None:
            return None if self._node_uid() else "the Node is not registered yet"

        async def lease_fresh() -> str | None:
            age = self.heartbeat_age()
            if age is None:
                return "the Lease was never renewed"
            if age >= self.settings.lease_duration:
                return f"last renewal {age:.1f} s ago (lease duration {self.settings.lease_duration} s)"
            return None

        async def provider_reachable() -> str | None:
            if not isinstance(self.provider, Pinger):
                return None  # nothing to ask: assume reachable
            try:
                async with asyncio.timeout(PING_TIMEOUT):
                    await self.guard.call("ping", self.provider.ping)
            except TimeoutError:
                return f"provider {self.provider.name} did not answer within {PING_TIMEOUT:.0f} s"
            except Exception as exc:
                return f"provider {self.provider.name}: {exc}"
            return None

        return {"registered": registered, "lease-fresh": lease_fresh, "provider": provider_reachable}

    # -- lifecycle -----------------------------------------------------------------------------------
    async def start(self) -> int:
        """Load the certificate, listen; returns the kubelet API port. TLSConfigError if unusable."""
        await self.serving.initial(self.kube)
        if self.client_ca is None:
            log.warning("no client CA: client certificates (the apiserver's) cannot authenticate")
        port = await self.server.start()
        metrics.register_state(self.state)
        if self.ops is not None:
            try:
                await self.ops.start()
            except OSError as exc:
                # Monitoring must not take the kubelet down: say so loudly and run without it.
                log.error("cannot serve /metrics, /healthz, /readyz on port %d: %s", self.ops.port, exc)
                self.ops = None
        return port

    def background(self) -> list[asyncio.Task[Any]]:
        """The long-lived tasks: rotation watch, CSR requests (create before kopf starts)."""
        tasks = []
        if self.settings.tls_cert_file or self.settings.tls_secret or self.serving.client_ca_file:
            tasks.append(asyncio.create_task(self.serving.watch(self.kube), name="kubelet-api-tls-watch"))
        if self.settings.serving_cert_csr:
            tasks.append(asyncio.create_task(self.csr.run(), name="kubelet-api-csr"))
        return tasks

    async def stop(self) -> None:
        """Close the listeners and their connections (idempotent)."""
        await self.server.stop()
        if self.ops is not None:
            await self.ops.stop()
        metrics.unregister_state()

    def close(self) -> None:
        self.serving.close()

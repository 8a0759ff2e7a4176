"""Operational endpoints on a plain-HTTP port: ``/metrics``, ``/healthz``, ``/readyz``.

``/healthz`` answers while the event loop runs; ``/readyz`` runs the named checks (the wiring gives
them: node registered, lease fresh, provider reachable) and lists each, Kubernetes style::

    [+]registered ok
    [-]lease-fresh failed: last renewal 52.1 s ago (lease duration 40 s)

The port has no authentication, so its connections are bounded as the kubelet API's are (the same
limits; connections.py): a flood of them must not take memory from the node.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from vk_operator import metrics
from vk_operator.kubelet_api.connections import BoundedSite, ConnectionLimits, Connections

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[str | None]]  # None: healthy; else why not


class OpsServer:
    def __init__(
        self,
        *,
        address: str,
        port: int,
        checks: Mapping[str, Check],
        limits: ConnectionLimits | None = None,
    ) -> None:
        self.address = address
        self.port = port
        self.checks = dict(checks)
        self._runner: web.AppRunner | None = None
        self.connections = Connections(limits, listener="metrics")
        self.app = web.Application(middlewares=[self.connections.middleware])
        self.app.router.add_get("/metrics", self.metrics)
        self.app.router.add_get("/healthz", self.healthz)
        self.app.router.add_get("/livez", self.healthz)
        self.app.router.add_get("/readyz", self.readyz)

    async def start(self) -> int:
        handler_kwargs: dict[str, Any] = {
            "access_log": None,
            "keepalive_timeout": self.connections.limits.idle_timeout,
        }
        self._runner = web.AppRunner(self.app, shutdown_timeout=1.0, **handler_kwargs)
        await self._runner.setup()
        site = BoundedSite(
            self._runner,
            self.address,
            self.port,
            connections=self.connections,
            handler_kwargs=handler_kwargs,
        )
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        log.info("metrics and health endpoints on http://%s:%d", self.address, self.port)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=generate_latest(metrics.REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def healthz(self, request: web.Request) -> web.StreamResponse:
        return web.Response(text="ok\n")

    async def readyz(self, request: web.Request) -> web.StreamResponse:
        lines, ready = [], True
        for name, check in self.checks.items():
            try:
                problem = await check()
            except Exception as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if problem is None:
                lines.append(f"[+]{name} ok")
            else:
                ready = False
                lines.append(f"[-]{name} failed: {problem}")
        lines.append("readyz check passed" if ready else "readyz check failed")
        return web.Response(status=200 if ready else 503, text="\n".join(lines) + "\n")

"""``/portForward/{namespace}/{pod}``: ``kubectl port-forward`` through the apiserver, over SPDY/3.1.

kubectl 1.37 tunnels its SPDY session through a WebSocket to the apiserver, which sends it on to the
kubelet as ``Upgrade: SPDY/3.1`` with ``X-Stream-Protocol-Version: portforward.k8s.io``. The
kubelet's side (k8s.io/cri-streaming ``portforward/httpstream.go``), as done here:

* each forwarded TCP connection is a pair of client-opened streams with headers ``port``,
  ``requestID`` and ``streamType`` ``error`` or ``data`` (a stream missing or botching them is
  refused with RST_STREAM); a pair incomplete after 30 s gets an error message;
* once both streams of a pair exist, the provider connects to the port
  (:class:`vk_operator.provider.PortForwardProvider`) and bytes flow on the data stream; when it is
  done both streams are half-closed; when it fails, the reason is written on the error stream
  (kubectl prints it and drops the whole session) and both streams are reset;
* the session lasts until the client closes it; many pairs run concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping

from aiohttp import web

from vk_operator.domain.exec import PortConnection
from vk_operator.domain.model import Pod, PodRef
from vk_operator.domain.pod_meta import Key
from vk_operator.kubelet_api.streams import CLOSE_GRACE, Channel, SpdySession, check_upgrade, text
from vk_operator.provider import PortForwardProvider, Provider

log = logging.getLogger(__name__)

PORT_FORWARD_PROTOCOLS = ("portforward.k8s.io",)
STREAM_CREATION_TIMEOUT = 30.0


def refuse(channel: Channel) -> str | None:
    """Why a port-forward stream is refused (the kubelet's httpStreamReceived checks)."""
    port = channel.header("port")
    if not port:
        return '"port" header is required'
    if not port.isdigit() or not 0 < int(port) <= 65535:
        return f"unable to parse {port!r} as a port"
    if channel.kind not in ("error", "data"):
        return f"invalid stream type {channel.kind!r}" if channel.kind else '"streamType" header is required'
    return None


def request_id(channel: Channel) -> str:
    """The pair a stream belongs to: its requestID header, or (old clients) derived from its id."""
    given = channel.header("requestid")
    if given:
        return given
    return str(channel.id if channel.kind == "error" else channel.id - 2)


class _Pair:
    def __init__(self, request: str) -> None:
        self.request = request
        self.error: Channel | None = None
        self.data: Channel | None = None
        self.timer: asyncio.TimerHandle | None = None

    def add(self, channel: Channel) -> str | None:
        if getattr(self, channel.kind) is not None:
            return f"{channel.kind} stream already assigned"
        setattr(self, channel.kind, channel)
        return None


class PortForwardRoutes:
    def __init__(
        self,
        *,
        node_name: str,
        provider: Provider,
        pods: Callable[[], Mapping[Key, Pod]],
        stream_creation_timeout: float = STREAM_CREATION_TIMEOUT,
    ) -> None:
        self.node_name = node_name
        self.provider = provider
        self.pods = pods
        self.stream_creation_timeout = stream_creation_timeout

    def register(self, app: web.Application) -> None:
        for path in ("/portForward/{namespace}/{pod}", "/portForward/{namespace}/{pod}/{uid}"):
            app.router.add_get(path, self.port_forward, allow_head=False)
            app.router.add_post(path, self.port_forward)

    async def port_forward(self, request: web.Request) -> web.StreamResponse:
        namespace, name = request.match_info["namespace"], request.match_info["pod"]
        pod = self.pods().get((namespace, name))
        uid = request.match_info.get("uid")
        if pod is None or (uid and pod["metadata"].get("uid") != uid):
            return text(
                404, f'pod "{name}" does not exist in namespace "{namespace}" on node {self.node_name}'
            )
        if not isinstance(self.provider, PortForwardProvider):
            return text(
                501,
                f"provider {self.provider.name} does not support port forwarding (no capability)",
            )
        protocol = check_upgrade(request, PORT_FORWARD_PROTOCOLS)
        if isinstance(protocol, web.Response):
            return protocol
        ref = PodRef(namespace, name, pod["metadata"]["uid"])
        session = SpdySession(request, accept=refuse)
        response = await session.upgrade(protocol)
        tasks: set[asyncio.Task[None]] = set()
        try:
            await self._serve(session, ref, tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await session.goodbye(CLOSE_GRACE if not session.closed.is_set() else 0)
            session.close()
        return response

    async def _serve(self, session: SpdySession, ref: PodRef, tasks: set[asyncio.Task[None]]) -> None:
        pairs: dict[str, _Pair] = {}
        done = asyncio.ensure_future(session.peer_done.wait())
        try:
            while True:
                getter = asyncio.ensure_future(session.opened.get())
                await asyncio.wait({getter, done}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    return  # the client closed the session
                channel = getter.result()
                key = request_id(channel)
                pair = pairs.get(key)
                if pair is None:
                    pair = pairs[key] = _Pair(key)
                    pair.timer = asyncio.get_running_loop().call_later(
                        self.stream_creation_timeout, self._expire, session, pairs, key
                    )
                problem = pair.add(channel)
                if problem is not None:
                    message = f"error processing stream for request {key}: {problem}"
                    log.warning("port-forward to %s/%s: %s", ref.namespace, ref.name, message)
                    if pair.error is not None:
                        session.send_now(pair.error, message.encode())
                    continue
                if pair.error is not None and pair.data is not None:
                    del pairs[key]
                    if pair.timer is not None:
                        pair.timer.cancel()
                    task = asyncio.create_task(self._forward(session, ref, pair.error, pair.data))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
        finally:
            done.cancel()
            for pair in pairs.values():
                if pair.timer is not None:
                    pair.timer.cancel()

    def _expire(self, session: SpdySession, pairs: dict[str, _Pair], key: str) -> None:
        pair = pairs.pop(key, None)
        if pair is None:
            return
        message = f"timed out waiting for streams of request {key}"
        log.warning("port-forward: %s", message)
        if pair.error is not None:
            session.send_now(pair.error, message.encode())
        for channel in (pair.error, pair.data):
            if channel is not None:
                session.reset(channel)
                session.forget(channel)

    async def _forward(self, session: SpdySession, ref: PodRef, error: Channel, data: Channel) -> None:
        assert isinstance(self.provider, PortForwardProvider)
        port = int(data.header("port"))

        async def send(chunk: bytes) -> None:
            await session.send(data, chunk)

        try:
            await self.provider.port_forward(ref, port, PortConnection(session.input(data), send))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            reason = f"pod not found in the provider: {exc}" if isinstance(exc, KeyError) else str(exc)
            message = f"error forwarding port {port} to pod {ref.name}, uid {ref.uid}: {reason}"
            log.info("port-forward: %s", message)
            await session.send(error, message.encode())
            session.reset(data)
            session.reset(error)
        else:
            session.end(data)
            session.end(error)
        finally:
            session.forget(data)
            session.forget(error)

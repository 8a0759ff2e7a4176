"""``/exec/{namespace}/{pod}/{container}``: ``kubectl exec`` through the apiserver, over SPDY/3.1.
``/attach/...`` (``kubectl attach``) is the same protocol without a command.

What kube-apiserver 1.37 sends (seen on the real binaries): ``POST /exec/NS/POD/CONTAINER?command=
echo&command=hi&input=1&output=1&error=1[&tty=1]`` with ``Connection: Upgrade``, ``Upgrade:
SPDY/3.1`` and one ``X-Stream-Protocol-Version`` header per protocol it speaks (v5, v4, v3, v2,
channel.k8s.io, in its order of preference), authenticated by its kubelet client certificate.
(kubectl speaks WebSocket v5 to the apiserver, which translates to SPDY because our Node does not
declare the ``ExtendWebSocketsToKubelet`` feature.)

The remotecommand server protocol (k8s.io/cri-streaming ``remotecommand/httpstream.go`` and
``exec.go``), as done here:

1. Checks before upgrading, answered as plain HTTP: the options (400), the pod and container
   (404), the provider's exec capability (501), the upgrade headers (400) and the protocol (the
   client's first one we speak; none: 403 with ``X-Accepted-Stream-Protocol-Versions``).
2. ``101 Switching Protocols`` with ``Upgrade: SPDY/3.1`` and the chosen protocol; the client then
   opens one stream per channel, header ``streamType``: ``error``, then ``stdin``/``stdout``/
   ``stderr`` as asked for, and ``resize`` with a tty. Each is answered at once (SYN_REPLY); the
   command starts once all expected streams exist (30 s at most).
3. The provider runs the command (:class:`vk_operator.provider.ExecProvider`). Output goes out as
   data frames; stdin arrives until the client half-closes it.
4. The result is written on the error stream: v4/v5 a metav1.Status JSON (Success; Failure
   ``NonZeroExitCode`` with the exit code as cause; Failure ``InternalError``), v2/v3 only a
   failure's message. Then every stream is half-closed, GOAWAY sent, and the connection closed
   once the client has closed its side (or after a grace period).

Over SPDY, v5 is v4 (the v5 additions concern WebSocket only), so v5 is accepted as v4. The
connection handling shared with port-forward is in ``streams.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from aiohttp import web
from multidict import MultiMapping

from vk_operator.domain.exec import (
    ExecIO,
    TerminalSize,
    exit_status,
    internal_error_status,
)
from vk_operator.domain.model import Pod, PodRef
from vk_operator.domain.pod_meta import Key
from vk_operator.kubelet_api.streams import CLOSE_GRACE, Channel, SpdySession, check_upgrade, text
from vk_operator.provider import AttachProvider, ExecError, ExecProvider, Provider

log = logging.getLogger(__name__)


V5, V4, V3, V2 = "v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io"
SPDY_PROTOCOLS = (V5, V4, V3, V2)
STREAM_CREATION_TIMEOUT = 30.0  # the kubelet's DefaultStreamCreationTimeout

_TRUE = frozenset({"1", "t", "true", "y", "yes", "on"})


class BadRequest(Exception):
    pass


@dataclasses.dataclass(frozen=True)
class ExecOptions:
    """The query of an exec request (the apiserver's ``input/output/error/tty`` names; the
    PodExecOptions names ``stdin/stdout/stderr`` are accepted too)."""

    command: tuple[str, ...]
    stdin: bool = False
    stdout: bool = False
    stderr: bool = False
    tty: bool = False

    def expected_streams(self, protocol: str = V4) -> int:
        """The error stream plus one per channel (resize with a tty, from v3 on), as the kubelet
        counts them."""
        return 1 + self.stdin + self.stdout + self.stderr + (self.tty and protocol != V2)


def parse_exec_options(query: MultiMapping[str], *, attach: bool = False) -> ExecOptions:
    def flag(*names: str) -> bool:
        return any((query.get(n) or "").strip().lower() in _TRUE for n in names)

    command = () if attach else tuple(query.getall("command", ()))
    if not attach and (not command or not command[0]):
        raise BadRequest("you must specify a command (query parameter command)")
    tty = flag("tty")
    stdin = flag("input", "stdin")
    stdout = flag("output", "stdout")
    # With a tty there is no separate stderr: the kubelet drops it silently.
    stderr = flag("error", "stderr") and not tty
    if not (stdin or stdout or stderr):
        raise BadRequest("you must specify at least 1 of stdin, stdout, stderr")
    return ExecOptions(command, stdin, stdout, stderr, tty)


async def terminal_sizes(session: SpdySession, channel: Channel) -> AsyncIterator[TerminalSize]:
    """The resize stream: JSON objects ``{"Width": W, "Height": H}``, one after another."""
    decoder = json.JSONDecoder()
    buffer = ""
    async for chunk in session.input(channel):
        buffer += chunk.decode(errors="replace")
        while buffer.strip():
            try:
                value, end = decoder.raw_decode(buffer.lstrip())
            except json.JSONDecodeError:
                break  # incomplete: wait for more
            buffer = buffer.lstrip()[end:]
            if isinstance(value, dict):
                with contextlib.suppress(TypeError, ValueError):
                    yield TerminalSize(int(value.get("Width", 0)), int(value.get("Height", 0)))


def containers_of(pod: Pod) -> list[str]:
    spec = pod.get("spec") or {}
    return [
        c["name"]
        for kind in ("initContainers", "containers", "ephemeralContainers")
        for c in spec.get(kind) or []
    ]


# -- the route ---------------------------------------------------------------------------------------
class ExecRoutes:
    def __init__(
        self,
        *,
        node_name: str,
        provider: Provider,
        pods: Callable[[], Mapping[Key, Pod]],
        stream_creation_timeout: float = STREAM_CREATION_TIMEOUT,
        close_grace: float = CLOSE_GRACE,
    ) -> None:
        self.node_name = node_name
        self.provider = provider
        self.pods = pods
        self.stream_creation_timeout = stream_creation_timeout
        self.close_grace = close_grace

    def register(self, app: web.Application) -> None:
        for kind, handler in (("exec", self.exec), ("attach", self.attach)):
            for path in (
                f"/{kind}/{{namespace}}/{{pod}}/{{container}}",
                f"/{kind}/{{namespace}}/{{pod}}/{{uid}}/{{container}}",
            ):
                app.router.add_get(path, handler, allow_head=False)
                app.router.add_post(path, handler)

    async def exec(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, attach=False)

    async def attach(self, request: web.Request) -> web.StreamResponse:
        return await self._handle(request, attach=True)

    async def _handle(self, request: web.Request, *, attach: bool) -> web.StreamResponse:
        namespace, name = request.match_info["namespace"], request.match_info["pod"]
        container = request.match_info["container"]
        try:
            options = parse_exec_options(request.query, attach=attach)
        except BadRequest as exc:
            return text(400, str(exc))
        pod = self.pods().get((namespace, name))
        uid = request.match_info.get("uid")
        if pod is None or (uid and pod["metadata"].get("uid") != uid):
            return text(
                404, f'pod "{name}" does not exist in namespace "{namespace}" on node {self.node_name}'
            )
        if container not in containers_of(pod):
            return text(404, f'container "{container}" not found in pod "{name}"')
        capability, what = (AttachProvider, "attach") if attach else (ExecProvider, "exec")
        if not isinstance(self.provider, capability):
            return text(501, f"provider {self.provider.name} does not support {what} (no {what} capability)")
        protocol = check_upgrade(request, SPDY_PROTOCOLS)
        if isinstance(protocol, web.Response):
            return protocol
        ref = PodRef(namespace, name, pod["metadata"]["uid"])
        return await self._serve_spdy(request, protocol, options, ref, container, attach)

    async def _serve_spdy(
        self,
        request: web.Request,
        protocol: str,
        options: ExecOptions,
        ref: PodRef,
        container: str,
        attach: bool,
    ) -> web.StreamResponse:
        session = SpdySession(request)
        response = await session.upgrade(protocol)
        try:
            channels = await self._wait_for_streams(session, options, protocol)
            if channels is None:
                return response
            status = await self._run(session, channels, options, ref, container, attach)
            await self._finish(session, channels, protocol, status)
        finally:
            session.close()
        return response

    async def _wait_for_streams(
        self, session: SpdySession, options: ExecOptions, protocol: str
    ) -> dict[str, Channel] | None:
        channels: dict[str, Channel] = {}
        received = 0
        try:
            async with asyncio.timeout(self.stream_creation_timeout):
                while received < options.expected_streams(protocol):
                    channel = await session.opened.get()
                    if channel.kind not in ("error", "stdin", "stdout", "stderr", "resize"):
                        log.warning("exec: unexpected stream type %r", channel.kind)  # not counted
                        continue
                    received += 1
                    channels[channel.kind] = channel
        except TimeoutError:
            log.warning("exec: timed out waiting for the client to create streams (%d received)", received)
            await session.goodbye(0)
            return None
        session.flush()
        return channels

    async def _run(
        self,
        session: SpdySession,
        channels: dict[str, Channel],
        options: ExecOptions,
        ref: PodRef,
        container: str,
        attach: bool,
    ) -> dict[str, Any]:

        def sink(kind: str) -> Callable[[bytes], Any] | None:
            channel = channels.get(kind)
            if channel is None:
                return None

            async def write(data: bytes) -> None:
                await session.send(channel, data)

            return write

        stdin = channels.get("stdin") if options.stdin else None
        resize = channels.get("resize") if options.tty else None
        io = ExecIO(
            stdin=session.input(stdin) if stdin is not None else None,
            stdout=sink("stdout"),
            stderr=sink("stderr"),
            tty=options.tty,
            resize=terminal_sizes(session, resize) if resize is not None else None,
        )
        what = "attach to" if attach else "exec in"
        where = f"{ref.namespace}/{ref.name} {container}"
        try:
            if attach:
                assert isinstance(self.provider, AttachProvider)
                await self.provider.attach_container(ref, container, io)
                code = None
            else:
                assert isinstance(self.provider, ExecProvider)
                code = await self.provider.exec_in_container(ref, container, list(options.command), io)
        except asyncio.CancelledError:
            log.info("%s %s: the client went away", what, where)
            raise
        except KeyError as exc:
            log.info("%s %s: not found in the provider: %s", what, where, exc)
            return internal_error_status(f'container not found ("{container}")', attach=attach)
        except ExecError as exc:
            log.info("%s %s failed: %s", what, where, exc)
            return internal_error_status(str(exc), attach=attach)
        except Exception as exc:
            log.warning("%s %s: provider %s failed: %s", what, where, self.provider.name, exc)
            return internal_error_status(f"provider {self.provider.name}: {exc}", attach=attach)
        log.info("%s %s: ended%s", what, where, "" if attach else f" with exit code {code}")
        return exit_status(code, options.command)

    async def _finish(
        self, session: SpdySession, channels: dict[str, Channel], protocol: str, status: dict[str, Any]
    ) -> None:
        for kind in ("stdout", "stderr"):
            if kind in channels:
                session.end(channels[kind])
        error = channels.get("error")
        if error is not None:
            if protocol in (V4, V5):
                body = json.dumps(status, separators=(",", ":")).encode()
            else:  # v2/v3: the message of a failure, nothing on success
                body = status.get("message", "").encode() if status["status"] != "Success" else b""
            if body:
                await session.send(error, body)
            session.end(error)
        for channel in channels.values():
            session.end(channel)  # stdin, resize: our (unused) halves
        await session.goodbye(self.close_grace)

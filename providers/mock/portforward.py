"""The mock provider's ``kubectl port-forward``: every declared TCP ``containerPort`` answers.

A connection whose first bytes are an HTTP method gets one HTTP/1.1 response once the request
head is in, then the connection closes (a request body is not read)::

    HTTP/1.1 200 OK ... Connection: close

    mock pod <pod> container <container> port <port>: <METHOD> <path>

Anything else is echoed back as it arrives, until the client half-closes. Ports no container
declares refuse the connection (:class:`PortForwardError`, as "connection refused"), and so does a
pod that is not running.
"""

from __future__ import annotations

import datetime
import re
from typing import TYPE_CHECKING

from providers.mock import clock
from vk_operator.provider import PodPhase, PodRef, PortConnection, PortForwardError, ProviderPodStatus

if TYPE_CHECKING:
    from providers.mock.state import _MockPod

_METHOD = re.compile(rb"^(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS) ")
_REQUEST_LINE = re.compile(rb"^(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS) (\S+) HTTP/1\.[01]\r?\n")
_BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
MAX_HEAD = 64 * 1024


def listeners(pod: dict[str, object]) -> dict[int, str]:
    """Declared TCP container ports -> the container that declares them."""
    spec = pod.get("spec") or {}
    assert isinstance(spec, dict)
    found: dict[int, str] = {}
    for container in spec.get("containers") or []:
        for port in container.get("ports") or []:
            if port.get("protocol", "TCP") == "TCP" and "containerPort" in port:
                found.setdefault(int(port["containerPort"]), container["name"])
    return found


class MockPortForward:
    """Mixed into MockProvider: the PortForwardProvider capability."""

    if TYPE_CHECKING:
        pods: dict[str, _MockPod]

        def _status(self, mock: _MockPod, now: datetime.datetime) -> ProviderPodStatus: ...

        def _record(self, method: str, uid: str = "", per_pod: str | None = None) -> int: ...

    async def port_forward(self, ref: PodRef, port: int, connection: PortConnection) -> None:
        self._record("port_forward", ref.uid)
        mock = self.pods.get(ref.uid)
        if mock is None:
            raise KeyError(f"mock: no pod {ref.namespace}/{ref.name} ({ref.uid})")
        if self._status(mock, clock.now()).phase is not PodPhase.RUNNING:
            raise PortForwardError(f"pod {ref.name} is not running")
        container = listeners(mock.pod).get(port)
        if container is None:
            raise PortForwardError(
                f"failed to connect to localhost:{port} inside the pod: connection refused "
                "(no container of the mock declares that port)"
            )
        http: bytes | None = None  # the request head while it arrives (HTTP mode)
        first = True
        async for chunk in connection.incoming:
            if first and _METHOD.match(chunk):
                http = b""  # decided on the first chunk: clients write a request line at once
            first = False
            if http is None:
                await connection.send(chunk)  # echo
                continue
            http += chunk
            if b"\n" not in http and len(http) <= MAX_HEAD:
                continue  # the request line is not complete yet
            request = _REQUEST_LINE.match(http)
            if request is None:
                await connection.send(_BAD_REQUEST)
                return
            if b"\r\n\r\n" in http or b"\n\n" in http or len(http) > MAX_HEAD:
                await connection.send(self._http_answer(ref, container, port, request))
                return

    @staticmethod
    def _http_answer(ref: PodRef, container: str, port: int, request: re.Match[bytes]) -> bytes:
        method, path = request.group(1).decode(), request.group(2).decode(errors="replace")
        body = f"mock pod {ref.name} container {container} port {port}: {method} {path}\n".encode()
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        return head if method == "HEAD" else head + body

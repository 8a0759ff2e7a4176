"""A remotecommand client over SPDY/3.1, in Python on our sans-I/O connection: what kube-apiserver does
when it proxies ``kubectl exec`` to a kubelet (k8s.io/client-go remotecommand over spdystream), for
tests that talk to the kubelet API directly."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Mapping, Sequence
from typing import Any

from vk_operator.kubelet_api import spdy

ALL = ("v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io")


class Result:
    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, list[str]] = {}
        self.body = b""
        self.out: dict[str, bytes] = {}
        self.ended: set[str] = set()
        self.go_away = False
        self.eof = False

    @property
    def error(self) -> Any:
        raw = self.out.get("error", b"")
        return json.loads(raw) if raw.startswith(b"{") else raw.decode()


async def spdy_exec(
    port: int,
    path: str,
    *,
    protocols: Sequence[str] = ALL,
    stdin: Sequence[bytes] = (),
    channels: Sequence[str] = ("error", "stdout", "stderr"),
    resize: Sequence[bytes] = (),
    upgrade: str = "SPDY/3.1",
    hang_up_after: float | None = None,
    timeout: float = 10,
    host: str = "127.0.0.1",
    tls: ssl.SSLContext | None = None,
    headers: Mapping[str, str] | None = None,
) -> Result:
    """POST ``path`` as an upgrade, open ``channels``, send ``stdin``/``resize`` then FIN, and
    collect what comes back until GOAWAY or EOF (or hang up after ``hang_up_after`` seconds)."""
    result = Result()
    reader, writer = await asyncio.open_connection(host, port, ssl=tls)
    try:
        head = [f"POST {path} HTTP/1.1", f"Host: {host}", "Content-Length: 0"]
        head += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if upgrade:
            head += ["Connection: Upgrade", f"Upgrade: {upgrade}"]
        head += [f"X-Stream-Protocol-Version: {p}" for p in protocols]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        raw_head = await reader.readuntil(b"\r\n\r\n")
        lines = raw_head.decode().split("\r\n")
        result.status = int(lines[0].split()[1])
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                result.headers.setdefault(name.strip().lower(), []).append(value.strip())
        if result.status != 101:
            length = int(result.headers.get("content-length", ["0"])[0])
            result.body = await reader.readexactly(length)
            return result
        conn = spdy.Connection(client=True)
        ids = {conn.open_stream(spdy.headers(streamType=kind)): kind for kind in channels}
        by_kind = {kind: sid for sid, kind in ids.items()}
        if "stdin" in by_kind:
            for chunk in stdin:
                conn.send_data(by_kind["stdin"], chunk)
            conn.end_stream(by_kind["stdin"])
        if "resize" in by_kind:
            for chunk in resize:
                conn.send_data(by_kind["resize"], chunk)
            conn.end_stream(by_kind["resize"])
        writer.write(conn.data_to_send())
        if hang_up_after is not None:
            await asyncio.sleep(hang_up_after)
            return result
        async with asyncio.timeout(timeout):
            while not result.go_away:
                data = await reader.read(65536)
                if not data:
                    result.eof = True
                    break
                for event in conn.receive_data(data):
                    match event:
                        case spdy.DataReceived(sid, chunk):
                            result.out[ids[sid]] = result.out.get(ids[sid], b"") + chunk
                        case spdy.StreamEnded(sid):
                            result.ended.add(ids[sid])
                        case spdy.GoAwayReceived():
                            result.go_away = True
                writer.write(conn.data_to_send())
        return result
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


class SpdySession:
    """A client session kept open: open streams, send, and read until a condition holds."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.conn = spdy.Connection(client=True)
        self.out: dict[int, bytes] = {}
        self.ended: set[int] = set()
        self.reset: set[int] = set()
        self.replied: set[int] = set()
        self.go_away = False
        self.eof = False

    @classmethod
    async def connect(
        cls, port: int, path: str, protocols: Sequence[str], *, tls: ssl.SSLContext | None = None
    ) -> tuple[int, bytes, SpdySession | None]:
        """(status, body of a refusal, the session after a 101)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=tls)
        head = [f"POST {path} HTTP/1.1", "Host: kubelet", "Content-Length: 0"]
        head += ["Connection: Upgrade", "Upgrade: SPDY/3.1"]
        head += [f"X-Stream-Protocol-Version: {p}" for p in protocols]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode())
        lines = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
        status = int(lines[0].split()[1])
        if status == 101:
            return status, b"", cls(reader, writer)
        length = next(
            (int(v) for n, _, v in (ln.partition(":") for ln in lines) if n.lower() == "content-length"), 0
        )
        body = await reader.readexactly(length)
        writer.close()
        return status, body, None

    def open(self, **headers: str) -> int:
        sid = self.conn.open_stream(spdy.headers(**headers))
        self.flush()
        return sid

    def send(self, sid: int, data: bytes, *, fin: bool = False) -> None:
        self.conn.send_data(sid, data, fin=fin)
        self.flush()

    def flush(self) -> None:
        self.writer.write(self.conn.data_to_send())

    async def until(self, done: Any, timeout: float = 10) -> None:
        """Read and handle frames until ``done()`` is true (or the connection ends)."""
        async with asyncio.timeout(timeout):
            while not done():
                data = await self.reader.read(65536)
                if not data:
                    self.eof = True
                    return
                for event in self.conn.receive_data(data):
                    match event:
                        case spdy.StreamReplied(sid):
                            self.replied.add(sid)
                        case spdy.DataReceived(sid, chunk):
                            self.out[sid] = self.out.get(sid, b"") + chunk
                        case spdy.StreamEnded(sid):
                            self.ended.add(sid)
                        case spdy.StreamReset(sid):
                            self.reset.add(sid)
                        case spdy.GoAwayReceived():
                            self.go_away = True
                self.flush()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()

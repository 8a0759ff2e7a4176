"""``kubectl exec`` and ``kubectl attach`` on ACI: a websocket URL and a password from ARM.

**Exec.** ``containers.execute_command`` takes *one command string* and a terminal size and
answers ``{webSocketUri, password}``; the client connects, sends the password as its first text
frame, and then talks to a terminal: ACI's exec always has a TTY (input is echoed, lines end with
CR LF), runs one executable *without arguments*, and reports no exit code. So:

- an argv ACI cannot run as it is (more than one word, or a word with whitespace, which ACI
  would split) is refused on the stream: a message on stderr (stdout under a tty) and exit code 1,
  never a different command (``kubectl exec -it POD -- /bin/sh`` and typing works);
- with a tty, the terminal size is the first one the client sends (waited for up to
  :data:`FIRST_SIZE_WAIT` seconds); ACI has no resize for a running session, later sizes are read
  and dropped;
- stdin is sent as text frames; at its end, Ctrl-D (end of input for ACI's terminal) is sent and
  the output is read until ACI closes the socket;
- the exit code is None (ACI says nothing; the core reports success).

**Attach.** ``containers.attach`` answers ``{webSocketUri, password}``; the password goes in the
``Authorization`` header of the websocket upgrade, and the socket streams what the container
writes from then on until its run ends. ACI's attach carries output only: a client that asks for
stdin is told so on stderr, once.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import aiohttp

from vk_operator.provider import ExecError, ExecIO, TerminalSize

FIRST_SIZE_WAIT = 0.5  # seconds to wait for the client's first terminal size
CONNECT_TIMEOUT = 30.0
END_OF_INPUT = "\x04"
POLICY_VIOLATION = 1008  # the close code of a wrong password

StartExec = Callable[[str, TerminalSize | None], Awaitable[tuple[str, str]]]  # -> (uri, password)
StartAttach = Callable[[], Awaitable[tuple[str, str]]]


def aci_command(command: Sequence[str]) -> str | None:
    """The one string ACI runs for ``command``, or None when it cannot run it as asked."""
    if len(command) != 1:
        return None
    word = command[0]
    if not word or any(c.isspace() for c in word):
        return None
    return word


def refusal(command: Sequence[str]) -> str:
    return (
        f"ACI cannot run {list(command)!r}: its exec runs one executable without arguments "
        "(containers.execute_command takes a single command string). Nothing was run. "
        "Start a shell instead (kubectl exec -it POD -- /bin/sh) and type the command there.\r\n"
    )


class _Sizes:
    """Reads the client's terminal sizes: the first one for ``execute_command``, the rest dropped."""

    def __init__(self, io: ExecIO) -> None:
        self.first: asyncio.Future[TerminalSize] = asyncio.get_running_loop().create_future()
        self.task: asyncio.Task[None] = asyncio.ensure_future(self._read(io))

    async def _read(self, io: ExecIO) -> None:
        if not io.tty or io.resize is None:
            return
        async for size in io.resize:
            if not self.first.done() and size.width > 0 and size.height > 0:
                self.first.set_result(size)

    async def wait_first(self, timeout: float) -> TerminalSize | None:
        waiting: set[asyncio.Future[Any]] = {self.first, self.task}
        await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        return self.first.result() if self.first.done() else None


async def _send_input(ws: aiohttp.ClientWebSocketResponse, io: ExecIO) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    async for chunk in io.input():
        text = decoder.decode(chunk)
        if text and not ws.closed:
            await ws.send_str(text)
    tail = decoder.decode(b"", final=True)
    if not ws.closed:
        if tail:
            await ws.send_str(tail)
        await ws.send_str(END_OF_INPUT)


async def _receive_output(ws: aiohttp.ClientWebSocketResponse, io: ExecIO) -> bool:
    """Copy the socket's frames to stdout until it closes; whether any output came."""
    got = False
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.TEXT:
            data = str(msg.data).encode()
        elif msg.type == aiohttp.WSMsgType.BINARY:
            data = bytes(msg.data)
        else:
            break
        if data:
            got = True
            await io.write_stdout(data)
    return got


async def _cancel(*tasks: asyncio.Future[Any]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


def _timeout() -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT)


async def run_exec(start: StartExec, command: Sequence[str], io: ExecIO) -> int | None:
    """One exec session (see the module docstring); ExecError when ACI cannot start it."""
    text = aci_command(command)
    if text is None:
        await io.write_stderr(refusal(command).encode())
        return 1
    sizes = _Sizes(io)
    try:
        uri, password = await start(text, await sizes.wait_first(FIRST_SIZE_WAIT))
        async with aiohttp.ClientSession(timeout=_timeout()) as http:
            try:
                ws = await http.ws_connect(uri, autoping=True)
            except aiohttp.ClientError as exc:
                raise ExecError(f"cannot open ACI's exec websocket: {exc}") from exc
            async with ws:
                await ws.send_str(password)
                sender: asyncio.Task[None] = asyncio.ensure_future(_send_input(ws, io))
                try:
                    got = await _receive_output(ws, io)
                finally:
                    await _cancel(sender)
                if ws.close_code == POLICY_VIOLATION and not got:
                    raise ExecError("ACI refused the exec session (its password was not accepted)")
    finally:
        await _cancel(sizes.task)
    return None


async def run_attach(start: StartAttach, io: ExecIO) -> None:
    """One attach session (see the module docstring)."""
    uri, password = await start()
    if io.stdin is not None:
        await io.write_stderr(
            b"ACI's attach streams the container's output only: your input is not passed on.\r\n"
        )
    async with aiohttp.ClientSession(timeout=_timeout()) as http:
        try:
            ws = await http.ws_connect(uri, headers={"Authorization": password}, autoping=True)
        except aiohttp.WSServerHandshakeError as exc:
            raise ExecError(f"ACI refused the attach session: HTTP {exc.status}") from exc
        except aiohttp.ClientError as exc:
            raise ExecError(f"cannot open ACI's attach websocket: {exc}") from exc
        async with ws:
            await _receive_output(ws, io)

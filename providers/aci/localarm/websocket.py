"""The exec and attach websockets that ``Containers_ExecuteCommand`` / ``Containers_Attach`` point to.

Exec (``webSocketUri`` + ``password``): the first frame the client sends must be a text frame
holding the password, else the socket is closed with 1008. Then the server behaves as a terminal
(ACI's exec always has a TTY): it echoes what it receives, ends lines with CR LF, and reads a line on
Enter; Backspace erases, Ctrl-C interrupts, Ctrl-D on an empty line is end of input. Output is sent
as text frames; input may be text or binary frames. The command runs in the container's environment:
``/bin/sh``, ``sh``, ``bash`` ... give an interactive shell with the prompt ``# ``; a builtin of
:mod:`shell` (``env``, ``date``, ``cat``, ``hostname``, ``stty`` ...) runs once. As in ACI, the
command is one executable without arguments: a command with whitespace, or one the container does
not have, prints an ``exec failed`` line and closes. The socket closes (1000) when the program ends;
ACI reports no exit code.

Attach (``webSocketUri`` + ``password``): the password goes in the ``Authorization`` header of the
upgrade request (401 without it). The socket then streams the container's output produced from that
moment on, as text frames, until the container's current run ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import posixpath
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from .shell import BUILTINS, SHELLS, Interrupt, Program, ShellContext, ShellExit, interactive_shell

if TYPE_CHECKING:
    from .server import ExecSession, LocalArm

SPIN_LIMIT = 100_000


def _arm(request: web.Request) -> LocalArm:
    from .server import ARM_KEY

    return request.app[ARM_KEY]


def _session(request: web.Request, kind: str) -> ExecSession | None:
    arm = _arm(request)
    session = arm.sessions.get(request.match_info["session"])
    if session is None or session.kind != kind or session.used:
        return None
    if time.monotonic() - session.created > arm.knobs.exec_session_ttl_seconds:
        del arm.sessions[session.id]
        return None
    return session


def _context(arm: LocalArm, session: ExecSession) -> ShellContext | None:
    group = arm.groups.get(session.key)
    if group is None or group.epoch is None:
        return None
    rt = group.epoch.runtime(session.container)
    if rt is None:
        return None
    env = {**rt.definition.env, "HOSTNAME": group.name}
    return ShellContext(
        env=env,
        hostname=group.name,
        now=lambda: arm.clock.wall(arm.clock.now()),
        terminal=session.terminal,
    )


def exec_program(command: str, ctx: ShellContext) -> Program | str:
    """The program ``command`` names in the container, or the error text ACI would print."""
    if command == "" or any(c.isspace() for c in command):
        return (
            "OCI runtime exec failed: exec failed: unable to start container process: exec: "
            f'"{command}": executable file not found in $PATH: unknown\r\n'
        )
    name = posixpath.basename(command)
    if name in SHELLS:
        return interactive_shell(ctx)
    builtin = BUILTINS.get(name)
    if builtin is None or name in ("exit", "exec", "cd", "export", "unset", "read", "[", "test", ":"):
        return (
            "OCI runtime exec failed: exec failed: unable to start container process: exec: "
            f'"{command}": executable file not found in $PATH: unknown\r\n'
        )
    return builtin([command], ctx)


class Terminal:
    """Line discipline between a websocket and a program (echo, CR LF, ^C, ^D, backspace)."""

    def __init__(self, send: Callable[[str], Any]) -> None:
        self._send = send
        self._buffer: list[str] = []
        self.lines: asyncio.Queue[str | None] = asyncio.Queue()
        self.interrupted = asyncio.Event()
        self._last_cr = False

    async def feed(self, data: str) -> None:
        echo: list[str] = []
        for ch in data:
            if ch == "\n" and self._last_cr:
                self._last_cr = False
                continue
            self._last_cr = ch == "\r"
            if ch in "\r\n":
                echo.append("\r\n")
                self.lines.put_nowait("".join(self._buffer))
                self._buffer.clear()
            elif ch == "\x03":
                echo.append("^C\r\n")
                self._buffer.clear()
                self.interrupted.set()
            elif ch == "\x04":
                if not self._buffer:
                    self.lines.put_nowait(None)
            elif ch in "\x7f\b":
                if self._buffer:
                    self._buffer.pop()
                    echo.append("\b \b")
            else:
                self._buffer.append(ch)
                echo.append(ch)
        if echo:
            await self._send("".join(echo))

    def close(self) -> None:
        self.lines.put_nowait(None)


async def _wait(awaitable: Any, terminal: Terminal) -> tuple[bool, Any]:
    """(interrupted, result) of ``awaitable``, abandoned if Ctrl-C comes first."""
    task = asyncio.ensure_future(awaitable)
    interrupt = asyncio.ensure_future(terminal.interrupted.wait())
    done, _ = await asyncio.wait({task, interrupt}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        interrupt.cancel()
        return False, task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    terminal.interrupted.clear()
    return True, None


async def run_program(program: Program, terminal: Terminal, send: Callable[[str], Any]) -> int:
    """Drive ``program`` in real time against ``terminal``; returns its exit status."""
    value: Any = None
    throw = False
    spins = 0
    while True:
        try:
            if throw:
                throw = False
                op = program.throw(Interrupt())
            else:
                op = program.send(value)
        except StopIteration as stop:
            return int(stop.value or 0)
        except ShellExit as e:
            return e.code
        except Interrupt:
            return 130
        value = None
        kind = op[0]
        if kind == "out":
            spins = 0
            await send(str(op[1]).replace("\n", "\r\n"))
        elif kind == "sleep":
            spins = 0
            seconds = float(op[1])
            interrupted, _ = await _wait(
                asyncio.sleep(3600 * 24 * 365 if math.isinf(seconds) else seconds), terminal
            )
            throw = interrupted
        elif kind == "read":
            spins = 0
            if terminal.interrupted.is_set():
                terminal.interrupted.clear()
                throw = True
                continue
            interrupted, value = await _wait(terminal.lines.get(), terminal)
            throw = interrupted
        elif kind == "tick":
            spins += 1
            if spins % 1000 == 0:
                await asyncio.sleep(0)
            if spins > SPIN_LIMIT:  # a loop that never sleeps: hang until Ctrl-C, like a busy shell
                spins = 0
                interrupted, _ = await _wait(asyncio.sleep(3600 * 24 * 365), terminal)
                throw = interrupted


async def exec_handler(request: web.Request) -> web.StreamResponse:
    arm = _arm(request)
    session = _session(request, "exec")
    if session is None:
        raise web.HTTPNotFound(text="unknown or expired exec session")
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    arm.websockets.add(ws)
    try:
        try:
            first = await ws.receive(timeout=30)
        except TimeoutError:
            await ws.close(code=1008, message=b"no password")
            return ws
        if first.type != WSMsgType.TEXT or first.data != session.password:
            await ws.close(code=1008, message=b"authentication failed")
            return ws
        session.used = True
        ctx = _context(arm, session)
        if ctx is None:
            await ws.close(code=1011, message=b"container is gone")
            return ws

        async def send(text: str) -> None:
            if not ws.closed:
                await ws.send_str(text)

        program = exec_program(session.command, ctx)
        if isinstance(program, str):
            await send(program)
            await ws.close()
            return ws
        terminal = Terminal(send)

        async def pump() -> None:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await terminal.feed(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    await terminal.feed(msg.data.decode("utf-8", "replace"))
                else:
                    break
            terminal.close()

        reader = asyncio.ensure_future(pump())
        try:
            await run_program(program, terminal, send)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        await ws.close()
        return ws
    finally:
        arm.websockets.discard(ws)


async def attach_handler(request: web.Request) -> web.StreamResponse:
    arm = _arm(request)
    session = _session(request, "attach")
    if session is None:
        raise web.HTTPNotFound(text="unknown or expired attach session")
    if request.headers.get("Authorization") != session.password:
        raise web.HTTPUnauthorized(text="the Authorization header must carry the attach password")
    session.used = True
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    arm.websockets.add(ws)
    try:
        group = arm.groups.get(session.key)
        if group is None or group.epoch is None:
            await ws.close(code=1011, message=b"container is gone")
            return ws
        epoch = group.epoch
        run = epoch.current_run(session.container, arm.clock.now())
        if run is None:
            await ws.close()
            return ws
        sent = run.trace.total_lines
        closing = asyncio.ensure_future(ws.receive())  # notices the client going away
        while not ws.closed and not closing.done():
            t = arm.clock.now()
            current = arm.groups.get(session.key)
            if current is None or current.epoch is not epoch:
                break
            lines = epoch.log_lines(session.container, t)
            new = run.trace.total_lines - sent
            if new > 0:
                for _, text in lines[-new:] if new <= len(lines) else lines:
                    await ws.send_str(text + "\n")
                sent = run.trace.total_lines
            if epoch.current_run(session.container, t) is not run or not epoch.is_running(
                session.container, t
            ):
                break
            await asyncio.sleep(0.05)
        closing.cancel()
        await ws.close()
        return ws
    finally:
        arm.websockets.discard(ws)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/_localarm/exec/{session}", exec_handler)
    app.router.add_get("/_localarm/attach/{session}", attach_handler)

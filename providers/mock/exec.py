"""The mock provider's ``kubectl exec`` (a tiny deterministic shell over the pod it keeps) and
``kubectl attach`` (the container's log lines as they are written; stdin is echoed).

Commands (argv, or a script given to ``sh -c`` / ``bash -c``):

* ``echo ARGS...`` (``-n``: no newline), ``true``, ``false``, ``exit [N]``;
* ``cat`` copies stdin to stdout until EOF; ``cat PATH...`` prints files of the pod's configMap,
  secret, projected, downwardAPI volumes under the container's ``volumeMounts``;
* ``env`` prints the container's resolved environment (``NAME=value``, in order); ``printenv NAME``;
* ``hostname`` prints ``spec.hostname`` or the pod name;
* ``sleep SECONDS`` (ends early when the pod is deleted);
* anything else: ``sh: NAME: not found`` on stderr, exit code 127, as a shell says it.

``sh -c`` scripts run commands separated by ``;``, ``&&``, ``||`` or newlines, with ``$VAR``,
``${VAR}`` and ``$?`` expanded from the container's env (everywhere, quotes or not: it is a mock).
Under a tty, output line ends are ``\\r\\n`` as a terminal's, and stderr goes to stdout. The
container must be running (by the mock's clock), else :class:`ExecError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import posixpath
import re
import shlex
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

from providers.mock import clock
from vk_operator.provider import (
    ContainerPhase,
    ExecError,
    ExecIO,
    LogEntry,
    LogOptions,
    PodRef,
    ProviderPodStatus,
)

if TYPE_CHECKING:
    from providers.mock.state import _MockPod

SHELLS = frozenset({"sh", "bash", "ash", "dash", "/bin/sh", "/bin/bash", "/bin/ash", "/bin/dash"})
_VARIABLE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*)|(\?))")
_OPERATORS = frozenset({";", "&&", "||"})
_REDIRECT = re.compile(r"(\d?)>&(\d)")
_REDIRECT_TOKEN = re.compile(r"^__redirect_(\d)_(\d)__$")
_STATUS = "\x00status\x00"  # $?: replaced when each command runs


class _Exit(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


class _Shell:
    """One exec session: the pod's view (env, files, name) and the client's streams."""

    def __init__(
        self, mock: _MockPod, container: dict[str, object], io: ExecIO, alive: Callable[[], bool]
    ) -> None:
        self.mock = mock
        self.pod = mock.pod
        self.io = io
        self.alive = alive  # is the pod still in the provider?
        env = container.get("env") or []
        assert isinstance(env, list)
        self.env = [(str(e["name"]), str(e.get("value", ""))) for e in env]
        mounts = container.get("volumeMounts") or []
        assert isinstance(mounts, list)
        self.mounts = mounts
        self.status = 0
        self.swap: tuple[str, str] | None = None  # ("1", "2"): stdout to stderr; ("2", "1"): back

    async def out(self, text: str) -> None:
        write = self.io.write_stderr if self.swap == ("1", "2") else self.io.write_stdout
        await write(self._terminal(text))

    async def err(self, text: str) -> None:
        write = self.io.write_stdout if self.swap == ("2", "1") else self.io.write_stderr
        await write(self._terminal(text))

    def _terminal(self, text: str) -> bytes:
        return (text.replace("\n", "\r\n") if self.io.tty else text).encode()

    def variable(self, name: str) -> str:
        return next((v for n, v in reversed(self.env) if n == name), "")

    # -- scripts ---------------------------------------------------------------------------------
    async def script(self, source: str) -> int:
        expanded = _VARIABLE.sub(
            lambda m: _STATUS if m.group(3) else self.variable(m.group(1) or m.group(2)),
            source.replace("\n", ";"),
        )
        expanded = _REDIRECT.sub(lambda m: f" __redirect_{m.group(1) or '1'}_{m.group(2)}__ ", expanded)
        lexer = shlex.shlex(expanded, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        try:
            tokens = list(lexer)
        except ValueError as exc:
            await self.err(f"sh: syntax error: {exc}\n")
            return 2
        command: list[str] = []
        swap: tuple[str, str] | None = None
        skip = False
        for token in [*tokens, ";"]:
            if redirect := _REDIRECT_TOKEN.match(token):
                swap = (redirect.group(1), redirect.group(2))
                continue
            if token not in _OPERATORS:
                if set(token) <= set("&|"):
                    await self.err(f"sh: {token!r} is not supported by the mock shell\n")
                    return 2
                command.append(token)
                continue
            if command and not skip:
                self.swap = swap if swap in (("1", "2"), ("2", "1")) else None
                try:
                    self.status = await self.run([t.replace(_STATUS, str(self.status)) for t in command])
                finally:
                    self.swap = None
            command, swap = [], None
            # `a && b` runs b only after success, `a || b` only after failure.
            skip = (token == "&&" and self.status != 0) or (token == "||" and self.status == 0)
        return self.status

    # -- commands --------------------------------------------------------------------------------
    async def run(self, argv: Sequence[str]) -> int:
        name, args = argv[0], list(argv[1:])
        if name in SHELLS:
            if len(args) >= 2 and args[0] == "-c":
                return await self.script(args[1])
            if not args:  # an interactive shell: run what arrives on stdin
                return await self.script((await self._read_stdin()).decode(errors="replace"))
            await self.err(f"{name}: only -c SCRIPT is supported by the mock shell\n")
            return 2
        base = posixpath.basename(name)
        builtin = getattr(self, "cmd_" + base, None) if base.isidentifier() else None
        if builtin is None:
            await self.err(f"sh: {name}: not found\n")
            return 127
        code: int = await builtin(args)
        return code

    async def _read_stdin(self) -> bytes:
        return b"".join([chunk async for chunk in self.io.input()])

    async def cmd_echo(self, args: list[str]) -> int:
        newline = "\n"
        if args[:1] == ["-n"]:
            args, newline = args[1:], ""
        await self.out(" ".join(args) + newline)
        return 0

    async def cmd_true(self, args: list[str]) -> int:
        return 0

    async def cmd_false(self, args: list[str]) -> int:
        return 1

    async def cmd_exit(self, args: list[str]) -> int:
        if not args:
            raise _Exit(self.status)
        try:
            raise _Exit(int(args[0]) % 256)
        except ValueError:
            await self.err(f"sh: exit: Illegal number: {args[0]}\n")
            raise _Exit(2) from None

    async def cmd_hostname(self, args: list[str]) -> int:
        spec = self.pod.get("spec") or {}
        await self.out(f"{spec.get('hostname') or self.pod['metadata']['name']}\n")
        return 0

    async def cmd_env(self, args: list[str]) -> int:
        await self.out("".join(f"{n}={v}\n" for n, v in self.env))
        return 0

    async def cmd_printenv(self, args: list[str]) -> int:
        if not args:
            return await self.cmd_env(args)
        known = {n for n, _ in self.env}
        await self.out("".join(f"{self.variable(a)}\n" for a in args if a in known))
        return 0 if all(a in known for a in args) else 1

    async def cmd_cat(self, args: list[str]) -> int:
        if not args or args == ["-"]:
            async for chunk in self.io.input():
                if self.io.tty:
                    chunk = chunk.replace(b"\n", b"\r\n")
                await self.io.write_stdout(chunk)
            return 0
        status = 0
        for path in args:
            text = self._file(path)
            if text is None:
                await self.err(f"cat: {path}: No such file or directory\n")
                status = 1
            else:
                await self.out(text)
        return status

    async def cmd_sleep(self, args: list[str]) -> int:
        try:
            seconds = float(args[0]) if args else -1.0
        except ValueError:
            seconds = -1.0
        if seconds < 0:
            await self.err(f"sleep: invalid time interval '{' '.join(args)}'\n")
            return 1
        deadline = asyncio.get_running_loop().time() + seconds
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            await asyncio.sleep(min(left, 0.2))
            if not self.alive():
                return 137  # killed with its pod
        return 0

    def _file(self, path: str) -> str | None:
        path = posixpath.normpath(path)
        for mount in self.mounts:
            root = posixpath.normpath(str(mount.get("mountPath", "")))
            if path != root and not path.startswith(root.rstrip("/") + "/"):
                continue
            files = self.mock.volumes.get(str(mount.get("name")), {})
            relative = posixpath.relpath(path, root)
            sub = mount.get("subPath")
            if sub:
                relative = str(sub) if relative == "." else posixpath.join(str(sub), relative)
            if relative in files:
                return files[relative]
        return None


class MockExec:
    """Mixed into MockProvider: the ExecProvider and AttachProvider capabilities."""

    if TYPE_CHECKING:
        pods: dict[str, _MockPod]

        def _status(self, mock: _MockPod, now: datetime.datetime) -> ProviderPodStatus: ...

        def container_logs(
            self, ref: PodRef, container: str, options: LogOptions
        ) -> AsyncIterator[LogEntry]: ...

        def _record(self, method: str, uid: str = "", per_pod: str | None = None) -> int: ...

    def _running_container(self, ref: PodRef, container: str) -> tuple[_MockPod, dict[str, Any]]:
        mock = self.pods.get(ref.uid)
        if mock is None:
            raise KeyError(f"mock: no pod {ref.namespace}/{ref.name} ({ref.uid})")
        spec = mock.pod.get("spec") or {}
        found = next(
            (
                c
                for kind in ("containers", "initContainers")
                for c in spec.get(kind) or []
                if c["name"] == container
            ),
            None,
        )
        if found is None:
            raise KeyError(f"mock: pod {ref.name} has no container {container!r}")
        pod_status = self._status(mock, clock.now())
        status = next(
            (c for c in pod_status.init_containers + pod_status.containers if c.name == container), None
        )
        if status is None or status.phase is not ContainerPhase.RUNNING:
            state = status.phase.value if status is not None else "not started"
            raise ExecError(f'container "{container}" in pod "{ref.name}" is not running ({state})')
        return mock, found

    async def exec_in_container(
        self, ref: PodRef, container: str, command: Sequence[str], io: ExecIO
    ) -> int | None:
        self._record("exec_in_container", ref.uid)
        mock, found = self._running_container(ref, container)
        shell = _Shell(mock, found, io, lambda: ref.uid in self.pods)
        try:
            return await shell.run(list(command))
        except _Exit as exit_:
            return exit_.code

    async def attach_container(self, ref: PodRef, container: str, io: ExecIO) -> None:
        """The main process's output from now on (its log lines, see observability.py); it echoes
        what it reads on stdin. Ends with the container instance, or when the pod is deleted."""
        self._record("attach_container", ref.uid)
        self._running_container(ref, container)

        def terminal(data: bytes) -> bytes:
            return data.replace(b"\n", b"\r\n") if io.tty else data

        async def echo() -> None:
            async for chunk in io.input():
                await io.write_stdout(terminal(chunk))

        stdin = asyncio.create_task(echo()) if io.stdin is not None else None
        lines = self.container_logs(ref, container, LogOptions(follow=True, tail_lines=0))
        try:
            async for entry in lines:
                await io.write_stdout(terminal(entry.text.encode() + b"\n"))
        finally:
            if stdin is not None:
                stdin.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await stdin
            await lines.aclose()  # type: ignore[attr-defined]

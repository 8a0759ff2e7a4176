"""Streaming into a pod (``kubectl exec``, ``kubectl port-forward``): what a provider receives and
returns.

The kubelet API turns the client's streams (SPDY or WebSocket, remotecommand protocol) into an
:class:`ExecIO` and hands it to the provider's ``exec_in_container``; the provider pumps the bytes
to and from its backend (a websocket for ACI, an SSM session for ECS, a function for the mock)
and returns the exit code. The result becomes the remotecommand status the kubelet writes on the
error stream (:func:`exit_status`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

NON_ZERO_EXIT_CODE = "NonZeroExitCode"
EXIT_CODE_CAUSE = "ExitCode"


@dataclasses.dataclass(frozen=True)
class TerminalSize:
    width: int
    height: int


OutputSink = Callable[[bytes], Awaitable[None]]


async def _no_input() -> AsyncIterator[bytes]:
    return
    yield  # pragma: no cover


@dataclasses.dataclass(frozen=True)
class ExecIO:
    """The client's side of one exec session.

    ``stdin`` yields what the client types or pipes and ends at its EOF (None: no stdin asked for).
    ``stdout``/``stderr`` send bytes to the client (None: not asked for: discard). With ``tty``
    the client has a terminal: there is no separate stderr (write it to stdout, as a terminal
    would) and ``resize`` yields the terminal's size whenever it changes.
    """

    stdin: AsyncIterator[bytes] | None = None
    stdout: OutputSink | None = None
    stderr: OutputSink | None = None
    tty: bool = False
    resize: AsyncIterator[TerminalSize] | None = None

    def input(self) -> AsyncIterator[bytes]:
        """``stdin``, or an empty stream when the client sends none."""
        return self.stdin if self.stdin is not None else _no_input()

    async def write_stdout(self, data: bytes) -> None:
        if self.stdout is not None and data:
            await self.stdout(data)

    async def write_stderr(self, data: bytes) -> None:
        """To stderr, or to stdout under a terminal (which merges them)."""
        sink = self.stdout if self.tty else self.stderr
        if sink is not None and data:
            await sink(data)


def exit_status(exit_code: int | None, command: Sequence[str]) -> dict[str, Any]:
    """The metav1.Status the kubelet writes on the error stream (remotecommand v4+).

    ``None`` (a backend that cannot tell) counts as success. Exit codes are reported modulo 256,
    as a process's are (the client parses them as an 8-bit value).
    """
    code = 0 if exit_code is None else exit_code % 256
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": (
            "command terminated with non-zero exit code: "
            f"error executing command {_go_list(command)}, exit code {code}"
        ),
        "reason": NON_ZERO_EXIT_CODE,
        "details": {"causes": [{"reason": EXIT_CODE_CAUSE, "message": str(code)}]},
    }


def internal_error_status(message: str, *, attach: bool = False) -> dict[str, Any]:
    doing = "attaching to container" if attach else "executing command in container"
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"Internal error occurred: error {doing}: {message}",
        "reason": "InternalError",
        "code": 500,
    }


def _go_list(command: Sequence[str]) -> str:
    """``[sh -c exit 3]``: how Go prints a []string in the kubelet's messages."""
    return "[" + " ".join(command) + "]"


# -- port-forward ------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class PortConnection:
    """One forwarded TCP connection (``kubectl port-forward``): ``incoming`` yields what the client
    sends and ends when it half-closes; ``send`` writes to the client."""

    incoming: AsyncIterator[bytes]
    send: OutputSink

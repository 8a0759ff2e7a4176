"""The mock provider's exec: a deterministic little shell over the pod it keeps."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from providers.mock import MockConfig, MockProvider
from vk_operator.provider import ExecError, ExecIO, ExecProvider, PodRef, PreparedPod, ResolvedVolume

REF = PodRef("ns", "web", "u1")


def _prepared(**spec: Any) -> PreparedPod:
    pod: dict[str, Any] = {
        "metadata": {"namespace": "ns", "name": "web", "uid": "u1"},
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "img",
                    "env": [{"name": "GREETING", "value": "hi"}, {"name": "POD_NAME", "value": "web"}],
                    "volumeMounts": [
                        {"name": "config", "mountPath": "/etc/config"},
                        {"name": "config", "mountPath": "/etc/one.conf", "subPath": "one.conf"},
                    ],
                },
                {"name": "side", "image": "img"},
            ],
            **spec,
        },
    }
    config = ResolvedVolume("config", "configMap", {"one.conf": b"one=1\n", "dir/two": b"two\n"}, False)
    return PreparedPod(pod, {"config": config}, frozenset())


class Capture:
    def __init__(self, stdin: Sequence[bytes] | None = None, tty: bool = False) -> None:
        self.out = b""
        self.err = b""
        self.stdin = stdin
        self.tty = tty

    async def _stdout(self, data: bytes) -> None:
        self.out += data

    async def _stderr(self, data: bytes) -> None:
        self.err += data

    async def _input(self) -> AsyncIterator[bytes]:
        for chunk in self.stdin or ():
            yield chunk

    def io(self) -> ExecIO:
        return ExecIO(
            stdin=self._input() if self.stdin is not None else None,
            stdout=self._stdout,
            stderr=None if self.tty else self._stderr,
            tty=self.tty,
        )


@pytest.fixture
async def provider() -> MockProvider:
    mock = MockProvider(MockConfig())
    await mock.create_pod(_prepared())
    return mock


async def run(
    provider: MockProvider, *command: str, container: str = "app", **capture: Any
) -> tuple[int | None, str, str]:
    cap = Capture(**capture)
    code = await provider.exec_in_container(REF, container, list(command), cap.io())
    return code, cap.out.decode(), cap.err.decode()


def test_the_mock_has_the_capability() -> None:
    assert isinstance(MockProvider(), ExecProvider)


@pytest.mark.parametrize(
    ("command", "code", "out", "err"),
    [
        (["echo", "hello", "world"], 0, "hello world\n", ""),
        (["/bin/echo", "-n", "x"], 0, "x", ""),
        (["true"], 0, "", ""),
        (["false"], 1, "", ""),
        (["hostname"], 0, "web\n", ""),
        (["env"], 0, "GREETING=hi\nPOD_NAME=web\n", ""),
        (["printenv", "GREETING"], 0, "hi\n", ""),
        (["printenv", "NOPE"], 1, "", ""),
        (["cat", "/etc/config/one.conf", "/etc/config/dir/two"], 0, "one=1\ntwo\n", ""),
        (["cat", "/etc/one.conf"], 0, "one=1\n", ""),
        (["cat", "/etc/passwd"], 1, "", "cat: /etc/passwd: No such file or directory\n"),
        (["nosuch", "arg"], 127, "", "sh: nosuch: not found\n"),
        (["sh", "-c", "exit 3"], 3, "", ""),
        (["sh", "-c", "exit 300"], 44, "", ""),
        (["sh", "-c", "exit x"], 2, "", "sh: exit: Illegal number: x\n"),
        (["bash", "-c", "echo $GREETING ${POD_NAME}; false; echo $?"], 0, "hi web\n1\n", ""),
        (["sh", "-c", "false && echo no || echo yes"], 0, "yes\n", ""),
        (
            ["sh", "-c", "echo out; echo err >&2; echo back 1>&2; nosuch 2>&1; exit 4"],
            4, "out\nsh: nosuch: not found\n", "err\nback\n",
        ),
        (["sh", "-c", "echo a | cat"], 2, "", "sh: '|' is not supported by the mock shell\n"),
        (["sh", "-c", "echo 'unterminated"], 2, "", "sh: syntax error: No closing quotation\n"),
        (["sleep", "0.01"], 0, "", ""),
        (["sleep", "x"], 1, "", "sleep: invalid time interval 'x'\n"),
    ],
)  # fmt: skip
async def test_commands(provider: MockProvider, command: list[str], code: int, out: str, err: str) -> None:
    assert await run(provider, *command) == (code, out, err)


async def test_cat_echoes_stdin_and_sh_reads_a_script_from_it(provider: MockProvider) -> None:
    assert await run(provider, "cat", stdin=[b"a\n", b"b"]) == (0, "a\nb", "")
    assert await run(provider, "cat") == (0, "", "")  # no stdin: nothing to copy
    assert await run(provider, "sh", stdin=[b"echo from stdin; exit 5\n"]) == (5, "from stdin\n", "")


async def test_a_terminal_ends_lines_with_crlf_and_merges_stderr(provider: MockProvider) -> None:
    code, out, _ = await run(provider, "sh", "-c", "echo one; nosuch", tty=True)
    assert (code, out) == (127, "one\r\nsh: nosuch: not found\r\n")


async def test_env_is_per_container(provider: MockProvider) -> None:
    assert await run(provider, "env", container="side") == (0, "", "")


async def test_unknown_pods_and_containers_and_stopped_containers(provider: MockProvider) -> None:
    with pytest.raises(KeyError):
        await provider.exec_in_container(PodRef("ns", "x", "u2"), "app", ["true"], ExecIO())
    with pytest.raises(KeyError):
        await provider.exec_in_container(REF, "nope", ["true"], ExecIO())
    late = MockProvider(MockConfig(start_latency_seconds=60))
    await late.create_pod(_prepared())
    with pytest.raises(ExecError, match='container "app" in pod "web" is not running'):
        await late.exec_in_container(REF, "app", ["true"], ExecIO())
    done = MockProvider(MockConfig(run_seconds=1))
    await done.create_pod(_prepared(restartPolicy="Never"))
    done.pods["u1"].created -= datetime.timedelta(seconds=5)
    with pytest.raises(ExecError, match="not running"):
        await done.exec_in_container(REF, "app", ["true"], ExecIO())


async def test_sleep_ends_when_the_pod_is_deleted(provider: MockProvider) -> None:
    task = asyncio.create_task(run(provider, "sleep", "30"))
    await asyncio.sleep(0.1)
    await provider.delete_pod(REF)
    async with asyncio.timeout(2):
        assert (await task)[0] == 137


async def test_attach_streams_new_log_lines_and_echoes_stdin() -> None:
    provider = MockProvider(MockConfig(log_interval_seconds=0.05, run_seconds=0.6))
    await provider.create_pod(_prepared(restartPolicy="Never"))
    cap = Capture(stdin=[b"typed\n"])
    async with asyncio.timeout(5):
        await provider.attach_container(REF, "app", cap.io())  # returns when the container ends
    lines = cap.out.decode().splitlines()
    assert "typed" in lines
    numbers = [int(line.split()[-1]) for line in lines if line.startswith("web app line ")]
    assert len(numbers) >= 5 and numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    await asyncio.sleep(0.1)  # the stream ends after the last line, at most one interval early
    with pytest.raises(ExecError, match="not running"):
        await provider.attach_container(REF, "app", ExecIO())


async def test_attach_under_a_terminal_and_to_unknown_containers(provider: MockProvider) -> None:
    with pytest.raises(KeyError):
        await provider.attach_container(REF, "nope", ExecIO())
    cap = Capture(tty=True)
    task = asyncio.create_task(provider.attach_container(REF, "app", cap.io()))
    await asyncio.sleep(1.2)  # the default interval: one line a second
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cap.out.startswith(b"web app line ") and cap.out.endswith(b"\r\n")

"""``/exec`` on an in-process kubelet API (plain HTTP), driven by a Python SPDY client that does what
kube-apiserver's remotecommand client does (upgrade, one stream per channel, stdin then FIN)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, ClassVar

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.spdy_client import spdy_exec
from tests.unit.test_kubelet_server import POD, AllowAll, BareProvider
from vk_operator.domain.model import PodRef
from vk_operator.kubelet_api.auth import Authenticator, Authorizer
from vk_operator.kubelet_api.exec import SPDY_PROTOCOLS, ExecRoutes, parse_exec_options
from vk_operator.kubelet_api.server import KubeletServer
from vk_operator.kubelet_api.streams import negotiate
from vk_operator.kubelet_api.tls import ServingCertificate
from vk_operator.provider import ExecError, ExecIO, TerminalSize

Script = Callable[[PodRef, str, Sequence[str], ExecIO], Awaitable[int | None]]


class ExecOnly(BareProvider):
    name: ClassVar[str] = "exec"

    def __init__(self, script: Script) -> None:
        self.script = script
        self.calls: list[tuple[str, str, list[str], bool]] = []
        self.cancelled = asyncio.Event()

    async def exec_in_container(
        self, ref: PodRef, container: str, command: Sequence[str], io: ExecIO
    ) -> int | None:
        self.calls.append((ref.name, container, list(command), io.tty))
        try:
            return await self.script(ref, container, command, io)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise


async def echo_script(ref: PodRef, container: str, command: Sequence[str], io: ExecIO) -> int | None:
    if command[0] == "cat":
        async for chunk in io.input():
            await io.write_stdout(chunk)
        return 0
    if command[0] == "fail":
        await io.write_stderr(b"oops\n")
        return int(command[1])
    if command[0] == "broken":
        raise ExecError("container is not running")
    if command[0] == "gone":
        raise KeyError("no such pod")
    if command[0] == "sizes":
        assert io.resize is not None
        sizes = [s async for s in io.resize]
        await io.write_stdout(repr(sizes).encode())
        await io.write_stderr(b"(tty: to stdout)\n")
        return None
    if command[0] == "hang":
        await asyncio.sleep(3600)
    await io.write_stdout((" ".join(command[1:]) + "\n").encode())
    return 0


@pytest.fixture
async def server_for() -> AsyncIterator[Callable[..., Awaitable[int]]]:
    clients: list[TestClient[Any, Any]] = []

    async def make(provider: Any, **routes: Any) -> int:
        kube: Any = AllowAll()
        server = KubeletServer(
            node_name="vk-unit",
            provider=provider,
            pods=lambda: {("ns", "web"): POD},
            serving=ServingCertificate(node_name="vk-unit", node_ip="127.0.0.1"),
            authenticator=Authenticator(kube, anonymous=True),
            authorizer=Authorizer(kube),
        )
        app = server.app
        if routes:  # tuned timeouts: the exec routes alone, without the auth middleware
            app = web.Application()
            ExecRoutes(node_name="vk-unit", provider=provider, pods=server.pods, **routes).register(app)
        client: TestClient[Any, Any] = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        assert client.server.port is not None
        return client.server.port

    yield make
    for client in clients:
        await client.close()


SUCCESS = {"metadata": {}, "status": "Success"}


# -- pure helpers ----------------------------------------------------------------------------------------
def test_options_and_negotiation() -> None:
    from multidict import MultiDict

    options = parse_exec_options(
        MultiDict([("command", "sh"), ("command", "-c"), ("command", "x"), ("output", "1")])
    )
    assert options.command == ("sh", "-c", "x") and options.stdout and not options.stdin
    assert options.expected_streams() == 2
    tty = parse_exec_options(MultiDict(command="sh", input="1", output="1", error="1", tty="1"))
    assert not tty.stderr and tty.expected_streams() == 4  # error, stdin, stdout, resize
    assert tty.expected_streams("v2.channel.k8s.io") == 3  # v2 has no resize stream
    assert parse_exec_options(MultiDict(command="ls", stdin="true")).stdin  # PodExecOptions names
    assert negotiate(["v5.channel.k8s.io", "v4.channel.k8s.io"], SPDY_PROTOCOLS) == "v5.channel.k8s.io"
    assert negotiate(["channel.k8s.io, v4.channel.k8s.io"], SPDY_PROTOCOLS) == "v4.channel.k8s.io"
    assert negotiate(["channel.k8s.io"], SPDY_PROTOCOLS) is None


# -- before the upgrade ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "status", "words"),
    [
        ("/exec/ns/web/app?output=1", 400, "you must specify a command"),
        ("/exec/ns/web/app?command=ls", 400, "at least 1 of stdin, stdout, stderr"),
        ("/exec/ns/nope/app?command=ls&output=1", 404, 'pod "nope" does not exist in namespace "ns"'),
        ("/exec/ns/web/nope?command=ls&output=1", 404, 'container "nope" not found in pod "web"'),
        ("/exec/ns/web/other-uid/app?command=ls&output=1", 404, 'pod "web" does not exist'),
    ],
)
async def test_refusals_before_upgrading(
    server_for: Callable[..., Awaitable[int]], path: str, status: int, words: str
) -> None:
    port = await server_for(ExecOnly(echo_script))
    result = await spdy_exec(port, path)
    assert result.status == status and words in result.body.decode()


async def test_provider_without_exec_gets_501(server_for: Callable[..., Awaitable[int]]) -> None:
    port = await server_for(BareProvider())
    result = await spdy_exec(port, "/exec/ns/web/app?command=ls&output=1")
    assert result.status == 501
    assert b"provider bare does not support exec" in result.body


async def test_upgrade_headers_and_protocols_are_checked(server_for: Callable[..., Awaitable[int]]) -> None:
    port = await server_for(ExecOnly(echo_script))
    path = "/exec/ns/web/app?command=ls&output=1"
    result = await spdy_exec(port, path, upgrade="")
    assert result.status == 400 and b"missing upgrade headers" in result.body
    result = await spdy_exec(port, path, protocols=())
    assert result.status == 400 and b"X-Stream-Protocol-Version does not exist" in result.body
    result = await spdy_exec(port, path, protocols=("channel.k8s.io",))
    assert result.status == 403 and b"unable to negotiate protocol" in result.body
    assert "v4.channel.k8s.io" in result.headers["x-accepted-stream-protocol-versions"][0]


# -- sessions -------------------------------------------------------------------------------------------
async def test_echo_over_v5_as_the_apiserver_asks(server_for: Callable[..., Awaitable[int]]) -> None:
    provider = ExecOnly(echo_script)
    port = await server_for(provider)
    result = await spdy_exec(port, "/exec/ns/web/app?command=echo&command=hello+world&output=1&error=1")
    assert result.status == 101
    assert result.headers["upgrade"] == ["SPDY/3.1"]
    assert result.headers["x-stream-protocol-version"] == ["v5.channel.k8s.io"]
    assert result.out == {
        "stdout": b"hello world\n",
        "error": json.dumps(SUCCESS, separators=(",", ":")).encode(),
    }
    assert result.ended == {"stdout", "stderr", "error"} and result.go_away
    assert provider.calls == [("web", "app", ["echo", "hello world"], False)]


async def test_the_uid_form_of_the_path(server_for: Callable[..., Awaitable[int]]) -> None:
    port = await server_for(ExecOnly(echo_script))
    result = await spdy_exec(port, "/exec/ns/web/uid-1/init?command=echo&command=x&output=1")
    assert result.out["stdout"] == b"x\n" and result.error == SUCCESS


async def test_stdin_is_streamed_until_the_client_closes_it(
    server_for: Callable[..., Awaitable[int]],
) -> None:
    port = await server_for(ExecOnly(echo_script))
    chunks = [b"a" * 70000, b"b" * 3, b"\n" * 100000]
    result = await spdy_exec(
        port,
        "/exec/ns/web/app?command=cat&input=1&output=1&error=1",
        stdin=chunks,
        channels=("error", "stdin", "stdout", "stderr"),
    )
    assert result.out["stdout"] == b"".join(chunks) and result.error == SUCCESS


async def test_exit_codes_and_errors_on_the_error_stream(server_for: Callable[..., Awaitable[int]]) -> None:
    port = await server_for(ExecOnly(echo_script))
    result = await spdy_exec(port, "/exec/ns/web/app?command=fail&command=3&output=1&error=1")
    assert result.out["stderr"] == b"oops\n"
    assert result.error == {
        "metadata": {},
        "status": "Failure",
        "message": (
            "command terminated with non-zero exit code: error executing command [fail 3], exit code 3"
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": "3"}]},
    }
    result = await spdy_exec(port, "/exec/ns/web/app?command=fail&command=258&output=1&error=1")
    assert result.error["details"]["causes"][0]["message"] == "2"  # modulo 256, like a process
    result = await spdy_exec(port, "/exec/ns/web/app?command=broken&output=1")
    assert result.error["reason"] == "InternalError" and result.error["code"] == 500
    assert "container is not running" in result.error["message"]
    result = await spdy_exec(port, "/exec/ns/web/app?command=gone&output=1")
    assert 'container not found ("app")' in result.error["message"]


async def test_v2_and_v3_write_only_failure_messages(server_for: Callable[..., Awaitable[int]]) -> None:
    port = await server_for(ExecOnly(echo_script))
    for protocol in ("v3.channel.k8s.io", "v2.channel.k8s.io"):
        ok = await spdy_exec(port, "/exec/ns/web/app?command=echo&output=1", protocols=(protocol,))
        assert ok.headers["x-stream-protocol-version"] == [protocol]
        assert ok.out == {"stdout": b"\n"} and "error" in ok.ended
        failed = await spdy_exec(
            port, "/exec/ns/web/app?command=fail&command=4&output=1", protocols=(protocol,)
        )
        assert failed.error.endswith("exit code 4")


async def test_tty_has_no_stderr_and_gets_resizes(server_for: Callable[..., Awaitable[int]]) -> None:
    provider = ExecOnly(echo_script)
    port = await server_for(provider)
    result = await spdy_exec(
        port,
        "/exec/ns/web/app?command=sizes&output=1&error=1&tty=1",
        channels=("error", "stdout", "resize"),
        resize=[b'{"Width":80,"Height":24}\n{"Width":1', b'20,"Height":40}\n'],
    )
    assert result.out["stdout"] == (
        repr([TerminalSize(80, 24), TerminalSize(120, 40)]).encode() + b"(tty: to stdout)\n"
    )
    assert result.error == SUCCESS and provider.calls[0][3] is True


async def test_client_that_never_opens_its_streams_is_dropped(
    server_for: Callable[..., Awaitable[int]],
) -> None:
    provider = ExecOnly(echo_script)
    port = await server_for(provider, stream_creation_timeout=0.3)
    result = await spdy_exec(port, "/exec/ns/web/app?command=echo&output=1&error=1", channels=("error",))
    assert result.go_away and result.out == {}
    assert provider.calls == []


async def test_a_client_hanging_up_cancels_the_command(server_for: Callable[..., Awaitable[int]]) -> None:
    provider = ExecOnly(echo_script)
    port = await server_for(provider)
    await spdy_exec(port, "/exec/ns/web/app?command=hang&output=1&error=1", hang_up_after=0.3)
    async with asyncio.timeout(5):
        await provider.cancelled.wait()


async def test_v2_tty_sessions_have_no_resize_stream(server_for: Callable[..., Awaitable[int]]) -> None:
    port = await server_for(ExecOnly(echo_script))
    result = await spdy_exec(
        port,
        "/exec/ns/web/app?command=echo&command=v2&output=1&tty=1",
        protocols=("v2.channel.k8s.io",),
        channels=("error", "stdout"),
        timeout=5,
    )
    assert result.out == {"stdout": b"v2\n"} and result.go_away


class Attachable(ExecOnly):
    name: ClassVar[str] = "attachable"

    async def attach_container(self, ref: PodRef, container: str, io: ExecIO) -> None:
        self.calls.append((ref.name, container, [], io.tty))
        if container == "init":
            raise ExecError("container is not running")
        await io.write_stdout(b"main process output\n")
        async for chunk in io.input():
            await io.write_stdout(chunk.upper())


async def test_attach_is_exec_without_a_command(server_for: Callable[..., Awaitable[int]]) -> None:
    provider = Attachable(echo_script)
    port = await server_for(provider)
    result = await spdy_exec(
        port,
        "/attach/ns/web/app?input=1&output=1&error=1",
        stdin=[b"typed\n"],
        channels=("error", "stdin", "stdout", "stderr"),
    )
    assert result.status == 101
    assert result.out["stdout"] == b"main process output\nTYPED\n" and result.error == SUCCESS
    assert provider.calls == [("web", "app", [], False)]
    failed = await spdy_exec(port, "/attach/ns/web/init?output=1")
    assert failed.error["message"] == (
        "Internal error occurred: error attaching to container: container is not running"
    )
    bare = await server_for(ExecOnly(echo_script))  # exec but no attach capability
    result = await spdy_exec(bare, "/attach/ns/web/app?output=1")
    assert result.status == 501 and b"provider exec does not support attach" in result.body

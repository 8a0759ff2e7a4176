"""The ACI provider end to end: the real control plane, `virtual-kubelet --provider aci` as a process,
and the spec-checked local ARM server (``providers.aci.localarm``) as a process behind it.

Every test fails at teardown if one request the provider's SDK sent, or one response it got, did not
validate against the Microsoft.ContainerInstance 2023-05-01 spec (see ``node_fixtures``). Containers
run in the server's simulation: ``sh -c SCRIPT`` runs SCRIPT in its tiny shell, an image without a
command is a server that runs until stopped.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import pty
import re
import select
import signal
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from tests.aci import node_fixtures
from tests.aci.node_fixtures import TAG_NODE, TAG_UID, AciNode
from tests.conftest import (
    events_for,
    eventually,
    pod_manifest,
    pod_phase,
    wait_event,
    wait_node_ready,
    wait_phase,
)
from vk_operator.devcluster.cluster import Cluster
from vk_operator.kube import ApiError, Kube

# The fixtures of node_fixtures, used by name.
aci_node = node_fixtures.aci_node
start_localarm = node_fixtures.start_localarm

StartAci = Callable[..., Awaitable[AciNode]]
PUT = "ContainerGroups_CreateOrUpdate"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z ")


def sh(script: str, name: str = "app", **fields: Any) -> dict[str, Any]:
    """A container running ``script`` in the server's shell."""
    return {"name": name, "image": "busybox:1.36", "command": ["sh", "-c", script], **fields}


def pods_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/pods"


async def create_pod(admin: Kube, namespace: str, name: str, node: str, **spec: Any) -> dict[str, Any]:
    return await admin.create(pods_path(namespace), pod_manifest(name, node, **spec))  # type: ignore[no-any-return]


async def running(admin: Kube, namespace: str, name: str, node: str, **spec: Any) -> dict[str, Any]:
    created = await create_pod(admin, namespace, name, node, **spec)
    pod = await wait_phase(admin, namespace, name, "Running", timeout=40)
    assert pod["metadata"]["uid"] == created["metadata"]["uid"]
    return pod


def kubectl_command(cluster: Cluster, kubectl_binary: str, *args: str) -> list[str]:
    return [kubectl_binary, f"--kubeconfig={cluster.admin_kubeconfig}", *args]


@pytest.fixture
def kubectl_run(cluster: Cluster, kubectl_binary: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    """kubectl with stdin and the full result (exit code, stdout, stderr)."""

    def run(*args: str, stdin: str | None = None, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            kubectl_command(cluster, kubectl_binary, *args),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


async def api_gone(admin: Kube, namespace: str, name: str) -> bool:
    try:
        await admin.get(f"{pods_path(namespace)}/{name}")
    except ApiError as exc:
        if exc.not_found:
            return True
        raise
    return False


# -- scheduling, status, exit codes, restarts, Events -------------------------------------------------
async def test_deployment_is_scheduled_onto_the_aci_node_and_runs(
    admin: Kube, namespace: str, aci_node: StartAci
) -> None:
    vn = await aci_node()
    node = await admin.get(f"/api/v1/nodes/{vn.name}")
    taints = {t["key"] for t in node["spec"].get("taints", [])}
    assert "virtual-kubelet.io/provider" in taints
    labels = {"app": "web"}
    await admin.create(
        f"/apis/apps/v1/namespaces/{namespace}/deployments",
        {
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "nodeSelector": {"kubernetes.io/hostname": vn.name},
                        "tolerations": [
                            {
                                "key": "virtual-kubelet.io/provider",
                                "operator": "Exists",
                                "effect": "NoSchedule",
                            }
                        ],
                        # A port: ACI gives the group an IP address (without ports or a subnet: none).
                        "containers": [
                            {"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}
                        ],
                    },
                },
            },
        },
    )

    async def all_running() -> list[dict[str, Any]] | None:
        pods = (await admin.get(pods_path(namespace), labelSelector="app=web"))["items"]
        up = [p for p in pods if p.get("status", {}).get("phase") == "Running"]
        return up if len(up) == 3 else None

    pods = await eventually(all_running, what="3 replicas Running", timeout=45)
    assert {p["spec"]["nodeName"] for p in pods} == {vn.name}  # placed by the real scheduler

    async def ready_replicas() -> bool:
        deployment = await admin.get(f"/apis/apps/v1/namespaces/{namespace}/deployments/web")
        return bool(deployment["status"].get("readyReplicas") == 3)

    await eventually(ready_replicas, what="the Deployment reports 3 ready replicas", timeout=45)
    # One container group per pod, tagged with node, namespace, pod name and UID, running.
    groups = await vn.arm.groups_of(vn.name)
    assert set(groups) == {p["metadata"]["uid"] for p in pods}
    for pod in pods:
        tags = groups[pod["metadata"]["uid"]]["tags"]
        assert tags["vk-operator.namespace"] == namespace
        assert tags["vk-operator.pod"] == pod["metadata"]["name"]
        group = await vn.arm.group(groups[pod["metadata"]["uid"]]["name"])
        assert group is not None and group["properties"]["instanceView"]["state"] == "Running"
        status = pod["status"]
        assert status.get("podIP") == group["properties"]["ipAddress"]["ip"], (status, group)
        assert status.get("startTime"), status
        (container,) = status["containerStatuses"]
        assert container["ready"] is True and "running" in container["state"], container


async def test_exit_codes_restarts_and_provider_events(
    admin: Kube, namespace: str, aci_node: StartAci
) -> None:
    vn = await aci_node()
    await create_pod(
        admin, namespace, "fails", vn.name, restartPolicy="Never", containers=[sh("echo bye; exit 3")]
    )
    await create_pod(admin, namespace, "completes", vn.name, restartPolicy="Never", containers=[sh("exit 0")])
    await create_pod(
        admin, namespace, "crashes", vn.name, restartPolicy="Always", containers=[sh("sleep 0.5; exit 2")]
    )

    failed = await wait_phase(admin, namespace, "fails", "Failed", timeout=40)
    (status,) = failed["status"]["containerStatuses"]
    assert status["state"]["terminated"]["exitCode"] == 3, status
    assert status["state"]["terminated"].get("reason"), status
    done = await wait_phase(admin, namespace, "completes", "Succeeded", timeout=40)
    assert done["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0

    async def restarted() -> dict[str, Any] | None:
        pod = await admin.get(f"{pods_path(namespace)}/crashes")
        statuses = pod.get("status", {}).get("containerStatuses") or []
        if (
            statuses
            and statuses[0].get("restartCount", 0) > 0
            and statuses[0].get("lastState", {}).get("terminated")
        ):
            return pod
        return None

    crashing = await eventually(restarted, what="crashes restarted with lastState", timeout=40)
    (status,) = crashing["status"]["containerStatuses"]
    assert status["lastState"]["terminated"]["exitCode"] == 2, status
    assert crashing["status"]["phase"] in ("Running", "Pending"), crashing["status"]  # never Failed: Always

    for name in ("fails", "completes", "crashes"):
        event = await wait_event(admin, namespace, name, "ProviderCreateSuccess", timeout=30)
        assert event["source"].get("host") == vn.name or event.get("reportingInstance") == vn.name


async def test_aci_instance_view_events_become_kubernetes_events_once(
    admin: Kube, namespace: str, aci_node: StartAci
) -> None:
    vn = await aci_node()
    probe = {"tcpSocket": {"port": 80}, "periodSeconds": 5}
    await running(admin, namespace, "evented", vn.name, containers=[sh("sleep 3600", livenessProbe=probe)])
    await create_pod(admin, namespace, "crashy", vn.name, containers=[sh("echo boom; exit 2")])

    async def aci_reported(name: str, wanted: set[str]) -> set[str] | None:
        pod = await admin.get(f"{pods_path(namespace)}/{name}")
        group = await vn.arm.group_of(pod["metadata"]["uid"])
        names = set()
        for container in (group or {}).get("properties", {}).get("containers", []):
            names |= {e["name"] for e in container["properties"]["instanceView"].get("events") or []}
        return names if wanted <= names else None

    async def posted(name: str, reasons: set[str]) -> dict[str, list[dict[str, Any]]] | None:
        by_reason: dict[str, list[dict[str, Any]]] = {}
        for event in await events_for(admin, namespace, name):
            by_reason.setdefault(event["reason"], []).append(event)
        return by_reason if reasons <= set(by_reason) else None

    aci = await eventually(
        lambda: aci_reported("evented", {"Pulling", "Pulled", "Started"}), what="ACI's events"
    )
    events = await eventually(
        lambda: posted("evented", aci), what="ACI's events as Kubernetes Events", timeout=20
    )
    for reason in aci:
        (event,) = events[reason]  # once each
        assert event["type"] == "Normal" and event["message"].startswith("container app: "), event
    (warning,) = events["UnsupportedProbe"]  # the probe ACI cannot run: a Warning naming it
    assert warning["type"] == "Warning", warning
    assert (
        warning["message"].startswith("spec.containers[0].livenessProbe: ")
        and "tcpSocket" in warning["message"]
    )

    # A container ACI restarts: its Started and BackOff repeat in ACI (count grows) and stay one
    # Kubernetes Event each, whose count grows with them.
    async def repeated() -> dict[str, list[dict[str, Any]]] | None:
        by_reason = await posted("crashy", {"Started", "BackOff"})
        if by_reason is None or any(e["count"] < 2 for e in by_reason["Started"] + by_reason["BackOff"]):
            return None
        return by_reason

    crashy = await eventually(repeated, what="the restarts counted on one Event each", timeout=40)
    for reason in ("Started", "BackOff", "Pulling", "Pulled"):
        assert len(crashy.get(reason, [])) == 1, (reason, crashy.get(reason))
    (backoff,) = crashy["BackOff"]
    assert (
        backoff["type"] == "Warning"
        and backoff["message"] == "container app: Back-off restarting failed container"
    )


# -- kubectl logs, logs -f, exec, attach --------------------------------------------------------------
async def test_kubectl_logs_and_follow_streams_until_the_container_ends(
    admin: Kube,
    namespace: str,
    aci_node: StartAci,
    cluster: Cluster,
    kubectl_binary: str,
    kubectl_run: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    # A Running pod is steady: its end shows at the next slow status poll (30 s by default).
    vn = await aci_node("--status-poll-slow", "3")
    script = "for i in 1 2 3 4 5 6 7; do echo line $i; sleep 1; done"
    await running(admin, namespace, "counter", vn.name, restartPolicy="Never", containers=[sh(script)])

    follow = await asyncio.create_subprocess_exec(
        *kubectl_command(cluster, kubectl_binary, "logs", "-f", "counter", "-n", namespace),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert follow.stdout is not None
    arrivals: list[tuple[float, str]] = []
    started = time.monotonic()
    try:
        async with asyncio.timeout(45):
            while line := await follow.stdout.readline():
                arrivals.append((time.monotonic() - started, line.decode().rstrip("\n")))
            await follow.wait()
    finally:
        if follow.returncode is None:
            follow.kill()
            await follow.wait()
    stderr = (await follow.stderr.read()).decode() if follow.stderr else ""
    lines = [text for _, text in arrivals]
    assert lines == [f"line {i}" for i in range(1, 8)], (lines, stderr)
    assert follow.returncode == 0, stderr
    # Streamed as they were written (not all at the end): the lines arrived over several seconds.
    assert arrivals[-1][0] - arrivals[0][0] >= 2.0, arrivals
    ended_after_last_line = time.monotonic() - started - arrivals[-1][0]
    spread = arrivals[-1][0] - arrivals[0][0]
    print(f"logs -f: {len(lines)} lines over {spread:.1f}s, ended {ended_after_last_line:.1f}s later")

    await wait_phase(admin, namespace, "counter", "Succeeded", timeout=40)
    assert kubectl_run("logs", "counter", "-n", namespace).stdout.splitlines() == lines
    tail = kubectl_run("logs", "counter", "-n", namespace, "--tail", "2").stdout.splitlines()
    assert tail == ["line 6", "line 7"]
    stamped = kubectl_run("logs", "counter", "-n", namespace, "--timestamps").stdout.splitlines()
    assert len(stamped) == 7 and all(RFC3339.match(line) for line in stamped), stamped
    assert [RFC3339.sub("", line) for line in stamped] == lines


def _pty_session(command: list[str], steps: list[tuple[str, str]], timeout: float = 30) -> str:
    """Run ``command`` on a pseudo-terminal: for each (wait_for, then_type), read until ``wait_for`` is
    in the output, then type ``then_type``. Returns everything read until the command exits."""
    main, secondary = pty.openpty()
    proc = subprocess.Popen(command, stdin=secondary, stdout=secondary, stderr=secondary, close_fds=True)
    os.close(secondary)
    out = b""
    deadline = time.monotonic() + timeout
    pending = list(steps)
    try:
        while time.monotonic() < deadline:
            if pending and pending[0][0].encode() in out:
                _, typed = pending.pop(0)
                os.write(main, typed.encode())
            ready, _, _ = select.select([main], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(main, 65536)
                except OSError:  # EIO: the command exited and closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif proc.poll() is not None:
                break
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(main)
    return out.decode(errors="replace")


async def test_kubectl_exec_and_attach(
    admin: Kube,
    namespace: str,
    aci_node: StartAci,
    cluster: Cluster,
    kubectl_binary: str,
    kubectl_run: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    vn = await aci_node()
    pod = await running(
        admin,
        namespace,
        "shell",
        vn.name,
        containers=[
            {
                "name": "app",
                "image": "nginx:1.27",
                "env": [
                    {"name": "GREETING", "value": "hello-from-aci"},
                    {"name": "LOCALARM_LOG_EVERY", "value": "0.5"},
                ],
            }
        ],
    )
    group = await vn.arm.group_of(pod["metadata"]["uid"])
    assert group is not None
    kubectl = kubectl_command(cluster, kubectl_binary)

    # A command ACI can run (one executable, no arguments).
    result = kubectl_run("exec", "shell", "-n", namespace, "--", "hostname")
    assert result.returncode == 0, result.stderr
    assert group["name"] in result.stdout, result.stdout

    # An interactive shell, stdin piped (no terminal on our side).
    result = kubectl_run(
        "exec", "-i", "shell", "-n", namespace, "--", "/bin/sh", stdin="echo $GREETING\nexit\n"
    )
    assert "hello-from-aci" in result.stdout, (result.stdout, result.stderr)

    # `kubectl exec -it ... -- /bin/sh` on a real terminal.
    out = await asyncio.to_thread(
        _pty_session,
        [*kubectl, "exec", "-it", "shell", "-n", namespace, "--", "/bin/sh"],
        [("# ", "echo $GREETING\r"), ("hello-from-aci", "exit\r")],
    )
    assert "hello-from-aci" in out, out

    # argv with arguments: ACI cannot run it; the user is told, and nothing else is run.
    result = kubectl_run("exec", "shell", "-n", namespace, "--", "echo", "should-not-run")
    said = result.stdout + result.stderr
    assert "should-not-run" not in result.stdout.splitlines(), said
    assert said.strip(), "the user must be told why the command did not run"

    # kubectl attach streams the container's output from now on.
    attach = await asyncio.create_subprocess_exec(
        *kubectl, "attach", "shell", "-n", namespace, "-c", "app",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert attach.stdout is not None
    ticks: list[int] = []
    try:
        async with asyncio.timeout(30):
            while len(ticks) < 3:
                line = (await attach.stdout.readline()).decode()
                assert line, (
                    f"attach ended early: {(await attach.stderr.read()).decode() if attach.stderr else ''}"
                )
                found = re.search(r"localarm: tick (\d+)", line)
                if found:
                    ticks.append(int(found.group(1)))
    finally:
        attach.send_signal(signal.SIGINT)
        try:
            async with asyncio.timeout(10):
                await attach.wait()
        except TimeoutError:
            attach.kill()
            await attach.wait()
    assert ticks == sorted(ticks) and len(set(ticks)) == 3, ticks


# -- deletion ---------------------------------------------------------------------------------------
async def test_graceful_and_force_delete_remove_the_container_group(
    admin: Kube, namespace: str, aci_node: StartAci
) -> None:
    vn = await aci_node()
    graceful = await running(admin, namespace, "graceful", vn.name)
    forced = await running(admin, namespace, "forced", vn.name)
    for pod in (graceful, forced):
        assert await vn.arm.group_of(pod["metadata"]["uid"]) is not None

    started = time.monotonic()
    await admin.delete(f"{pods_path(namespace)}/graceful")  # default grace period: 30 s
    await eventually(lambda: api_gone(admin, namespace, "graceful"), what="graceful pod removed", timeout=30)
    print(f"graceful delete: pod gone after {time.monotonic() - started:.1f}s")
    # The object is removed once the provider confirmed the stop: the group is gone, or going.
    await eventually(
        lambda: _none(vn.arm.group_of(graceful["metadata"]["uid"])),
        what="graceful's group deleted",
        timeout=20,
    )

    await admin.delete(f"{pods_path(namespace)}/forced", {"gracePeriodSeconds": 0})
    assert await api_gone(admin, namespace, "forced")
    await eventually(
        lambda: _none(vn.arm.group_of(forced["metadata"]["uid"])), what="forced's group deleted", timeout=30
    )
    assert await vn.arm.groups_of(vn.name) == {}
    assert await vn.arm.calls("ContainerGroups_Delete") >= 2


async def _none(value: Awaitable[Any]) -> bool:
    return (await value) is None


# -- restart: adoption and orphans ------------------------------------------------------------------
async def test_restart_after_kill_9_adopts_every_group_and_removes_orphans(
    admin: Kube, namespace: str, aci_node: StartAci, cluster: Cluster
) -> None:
    vn = await aci_node("--retry-initial", "0.2", "--retry-cap", "1")
    # Groups that are not this node's: another node's (by tag) and an untagged one. Never touched.
    other_tags = {
        TAG_NODE: "some-other-node",
        TAG_UID: str(uuid.uuid4()),
        "vk-operator.namespace": namespace,
        "vk-operator.pod": "theirs",
    }
    await vn.arm.seed("ContainerGroupsGet_Succeeded.json", "other-nodes-group", other_tags)
    await vn.arm.seed("ContainerGroupsGet_Succeeded.json", "untagged-group", {})

    kept = [await running(admin, namespace, f"kept-{i}", vn.name) for i in range(3)]
    await create_pod(admin, namespace, "done", vn.name, restartPolicy="Never", containers=[sh("exit 0")])
    await wait_phase(admin, namespace, "done", "Succeeded", timeout=40)
    orphan = await running(admin, namespace, "orphan", vn.name)
    before = {p["metadata"]["name"]: p["status"] for p in kept}
    groups_before = await vn.arm.groups_of(vn.name)
    assert len(groups_before) == 5
    puts_before = await vn.arm.calls(PUT)
    assert await vn.arm.calls(PUT, 201) == 5

    vn.process.stop(signal.SIGKILL)
    # While it is down: the orphan's API object goes (force), a new pod arrives.
    await admin.delete(f"{pods_path(namespace)}/orphan", {"gracePeriodSeconds": 0})
    await create_pod(admin, namespace, "while-down", vn.name)

    restarted = vn.restart()
    await wait_node_ready(admin, vn.name, restarted)
    await eventually(
        lambda: _none(vn.arm.group_of(orphan["metadata"]["uid"])), what="orphan group removed", timeout=30
    )
    await wait_phase(admin, namespace, "while-down", "Running", timeout=40)

    # Adopted, never created twice: one PUT more (the new pod's), each group created exactly once.
    assert await vn.arm.calls(PUT) == puts_before + 1
    assert await vn.arm.calls(PUT, 201) == 6
    assert await vn.arm.calls(PUT, 200) == 0
    for pod in kept:
        now = (await admin.get(f"{pods_path(namespace)}/{pod['metadata']['name']}"))["status"]
        was = before[pod["metadata"]["name"]]
        assert now["phase"] == "Running"
        assert now["startTime"] == was["startTime"]
        assert now["containerStatuses"][0]["containerID"] == was["containerStatuses"][0]["containerID"]
    assert await pod_phase(admin, namespace, "done") == "Succeeded"
    groups_after = await vn.arm.groups_of(vn.name)
    assert set(groups_before) - set(groups_after) == {orphan["metadata"]["uid"]}
    for uid in set(groups_before) & set(groups_after):
        assert groups_after[uid]["name"] == groups_before[uid]["name"]
    # Nothing of another node, nothing untagged, was touched.
    assert await vn.arm.group("other-nodes-group") is not None
    assert await vn.arm.group("untagged-group") is not None
    assert restarted.proc.poll() is None


# -- secrets ----------------------------------------------------------------------------------------
async def test_secret_env_value_is_sent_only_as_secure_value_and_logged_nowhere(
    admin: Kube,
    namespace: str,
    aci_node: StartAci,
    kubectl_run: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    vn = await aci_node("--log-level", "DEBUG")
    secret_value = f"s3cr3t-{uuid.uuid4().hex}"
    await admin.create(
        f"/api/v1/namespaces/{namespace}/secrets",
        {"metadata": {"name": "db"}, "data": {"password": base64.b64encode(secret_value.encode()).decode()}},
    )
    pod = await running(
        admin,
        namespace,
        "app",
        vn.name,
        containers=[
            {
                "name": "app",
                "image": "nginx:1.27",
                "env": [
                    {"name": "PLAIN", "value": "visible"},
                    {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
                ],
            }
        ],
    )
    group = await vn.arm.group_of(pod["metadata"]["uid"])
    assert group is not None
    (container,) = group["properties"]["containers"]
    env = {e["name"]: e for e in container["properties"].get("environmentVariables", [])}
    # ARM never returns a secureValue; a plain `value` it does return. So: sent, and not as a value.
    assert env["PLAIN"].get("value") == "visible", env
    assert "PASSWORD" in env and "value" not in env["PASSWORD"], env
    assert secret_value not in json.dumps(group)
    # ... and the container does have it (the server's `env` prints the container's environment).
    result = kubectl_run("exec", "app", "-n", namespace, "--", "env")
    assert f"PASSWORD={secret_value}" in result.stdout, (result.stdout, result.stderr)
    # In no log line of the virtual kubelet (run at DEBUG), nor in any Event.
    await asyncio.sleep(0.5)  # let the log reach the file (unbuffered, but a write may be in flight)
    assert secret_value not in vn.logs()
    events = await admin.get(f"/api/v1/namespaces/{namespace}/events")
    assert secret_value not in json.dumps(events)


async def test_image_pull_secrets_and_azure_files_reach_aci_and_no_log(
    admin: Kube, namespace: str, aci_node: StartAci
) -> None:
    vn = await aci_node("--log-level", "DEBUG")
    password, key = f"pw-{uuid.uuid4().hex}", f"key-{uuid.uuid4().hex}=="

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    docker = {"auths": {"https://myacr.azurecr.io": {"username": "puller", "password": password}}}
    await admin.create(
        f"/api/v1/namespaces/{namespace}/secrets",
        {
            "metadata": {"name": "acr"},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": b64(json.dumps(docker))},
        },
    )
    await admin.create(
        f"/api/v1/namespaces/{namespace}/secrets",
        {
            "metadata": {"name": "storage"},
            "data": {"azurestorageaccountname": b64("acct"), "azurestorageaccountkey": b64(key)},
        },
    )
    mount = {"name": "share", "mountPath": "/data"}
    in_tree = {"name": "share", "azureFile": {"shareName": "data", "secretName": "storage", "readOnly": True}}
    csi = {
        "name": "share",
        "csi": {
            "driver": "file.csi.azure.com",
            "nodePublishSecretRef": {"name": "storage"},
            "volumeAttributes": {"shareName": "logs"},
        },
    }
    for name, volume in (("files", in_tree), ("csi-files", csi)):
        await create_pod(
            admin,
            namespace,
            name,
            vn.name,
            imagePullSecrets=[{"name": "acr"}],
            volumes=[volume],
            containers=[sh("sleep 3600", image="myacr.azurecr.io/app:1", volumeMounts=[mount])],
        )
    for name, share, read_only in (("files", "data", True), ("csi-files", "logs", False)):
        pod = await wait_phase(admin, namespace, name, "Running", timeout=40)
        group = await vn.arm.group_of(pod["metadata"]["uid"])
        assert group is not None
        props = group["properties"]
        # ARM never returns a password or a storage key: the rest shows they were sent.
        assert props["imageRegistryCredentials"] == [{"server": "myacr.azurecr.io", "username": "puller"}], (
            props
        )
        (volume,) = props["volumes"]
        expected = {
            "shareName": share,
            "storageAccountName": "acct",
            **({"readOnly": True} if read_only else {}),
        }
        assert volume == {"name": "share", "azureFile": expected}, volume
        (container,) = props["containers"]
        assert container["properties"]["volumeMounts"] == [
            {"name": "share", "mountPath": "/data", "readOnly": read_only}
        ]
        assert password not in json.dumps(group) and key not in json.dumps(group)
    await asyncio.sleep(0.5)  # let the log reach the file (unbuffered, but a write may be in flight)
    logs = vn.logs()
    assert f"{namespace}/files" in logs and f"{namespace}/csi-files" in logs  # the pods' log lines ...
    assert password not in logs and key not in logs  # ... without the secrets
    events = await admin.get(f"/api/v1/namespaces/{namespace}/events")
    assert password not in json.dumps(events) and key not in json.dumps(events)


# -- throttling -------------------------------------------------------------------------------------
async def test_throttling_with_a_low_write_budget_slows_but_loses_nothing(
    admin: Kube, namespace: str, aci_node: StartAci
) -> None:
    vn = await aci_node(
        "--retry-initial", "0.2", "--retry-cap", "2",
        server_args=("--writes-per-second", "1", "--writes-burst", "5"),
    )  # fmt: skip
    n = 10
    started = time.monotonic()
    for i in range(n):
        await create_pod(admin, namespace, f"p-{i}", vn.name)

    async def all_running() -> list[dict[str, Any]] | None:
        pods = (await admin.get(pods_path(namespace)))["items"]
        failed = [p["metadata"]["name"] for p in pods if p.get("status", {}).get("phase") == "Failed"]
        assert not failed, f"pods failed under throttling: {failed}"
        up = [p for p in pods if p.get("status", {}).get("phase") == "Running"]
        return up if len(up) == n else None

    await eventually(all_running, what=f"{n} pods Running", timeout=50, interval=0.5)
    elapsed = time.monotonic() - started
    stats = await vn.arm.stats()
    print(f"throttled: {n} pods Running after {elapsed:.1f}s; server stats {stats}")
    # The write budget admits 5 at once and 1/s after: the last create cannot be before ~5 s.
    assert elapsed >= (n - 5) / 1 - 1, elapsed
    assert await vn.arm.calls(PUT, 201) == n  # each group created once, none lost
    assert len(await vn.arm.groups_of(vn.name)) == n

"""The pure pod -> task definition mapping, the Fargate size table and the config model."""

from __future__ import annotations

import copy
import json
import pathlib
from typing import Any

import pydantic
import pytest
import yaml

from providers.fargate import FargateConfig, mapping, naming
from providers.fargate.config import FileVolumes
from providers.fargate.sizes import SIZES, TaskSize, smallest_fitting
from vk_operator.provider import InvalidPodError, PreparedPod, ResolvedVolume

REPO = pathlib.Path(__file__).resolve().parents[2]
CONFIG = FargateConfig(
    region="eu-west-1",
    cluster="vk",
    subnets=["subnet-0123456789abcdef0"],
    security_groups=["sg-0123456789abcdef0"],
    execution_role_arn="arn:aws:iam::123456789012:role/ecsTaskExecutionRole",
)
SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:vk-operator/n/uid-AbCdEf"


def pod(*containers: dict[str, Any], uid: str = "uid-1", name: str = "p", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ns", "name": name, "uid": uid},
        "spec": {"containers": list(containers) or [{"name": "app", "image": "busybox"}], **spec},
    }


def prepared(
    body: dict[str, Any],
    secret_env: frozenset[tuple[str, str]] = frozenset(),
    volumes: dict[str, ResolvedVolume] | None = None,
) -> PreparedPod:
    return PreparedPod(body, volumes or {}, secret_env)


def plan(body: dict[str, Any], **kwargs: Any) -> mapping.TaskPlan:
    return mapping.task_plan(prepared(body, **kwargs), CONFIG, "node-a", None)


# -- sizes -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("cpu", "memory", "expected"),
    [
        (0, 0, TaskSize(256, 512)),
        (256, 512, TaskSize(256, 512)),
        (256, 513, TaskSize(256, 1024)),
        (256, 2048, TaskSize(256, 2048)),
        (256, 3000, TaskSize(512, 3072)),  # 0.25 vCPU stops at 2 GB: the next CPU size with room
        (300, 512, TaskSize(512, 1024)),  # 0.5 vCPU starts at 1 GB
        (1024, 9000, TaskSize(2048, 9216)),
        (4096, 30 * 1024, TaskSize(4096, 30 * 1024)),
        (4096, 31 * 1024, TaskSize(8192, 32 * 1024)),  # 8 vCPU goes in 4 GB steps
        (8192, 61 * 1024, TaskSize(16384, 64 * 1024)),  # 16 vCPU in 8 GB steps
        (16384, 120 * 1024, TaskSize(16384, 120 * 1024)),
        (16385, 1024, None),
        (1024, 121 * 1024, None),
    ],
)
def test_smallest_fitting_size(cpu: int, memory: int, expected: TaskSize | None) -> None:
    assert smallest_fitting(cpu, memory) == expected


def test_size_table_is_the_published_one() -> None:
    assert SIZES[256] == (512, 1024, 2048)
    assert SIZES[512] == (1024, 2048, 3072, 4096)
    assert SIZES[1024][0] == 2048 and SIZES[1024][-1] == 8192 and len(SIZES[1024]) == 7
    assert SIZES[2048][0] == 4096 and SIZES[2048][-1] == 16384 and len(SIZES[2048]) == 13
    assert SIZES[4096][0] == 8192 and SIZES[4096][-1] == 30720 and len(SIZES[4096]) == 23
    assert SIZES[8192] == tuple(range(16384, 61441, 4096))
    assert SIZES[16384] == tuple(range(32768, 122881, 8192))


@pytest.mark.parametrize(
    ("containers", "inits", "expected"),
    [
        ([{}], [], TaskSize(256, 512)),
        ([{"requests": {"cpu": "250m", "memory": "512Mi"}}], [], TaskSize(256, 512)),
        (
            [{"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": "3Gi"}}],
            [],
            TaskSize(1024, 3072),
        ),
        (
            [{"requests": {"cpu": "500m"}}, {"requests": {"cpu": "600m", "memory": "2Gi"}}],
            [],
            TaskSize(2048, 4096),
        ),
        # the largest init container counts when it needs more than the app containers together
        (
            [{"requests": {"cpu": "250m"}}],
            [{"requests": {"cpu": "2", "memory": "4Gi"}}],
            TaskSize(2048, 4096),
        ),
    ],
)
def test_task_size_of_a_pod(
    containers: list[dict[str, Any]], inits: list[dict[str, Any]], expected: TaskSize
) -> None:
    body = pod(
        *({"name": f"c{i}", "image": "x", "resources": r} for i, r in enumerate(containers)),
        initContainers=[{"name": f"i{i}", "image": "x", "resources": r} for i, r in enumerate(inits)],
    )
    assert mapping.task_size(body) == expected


def test_a_pod_no_fargate_size_fits_is_refused_with_the_reason() -> None:
    body = pod({"name": "big", "image": "x", "resources": {"requests": {"cpu": "17", "memory": "1Gi"}}})
    with pytest.raises(InvalidPodError) as caught:
        plan(body)
    assert caught.value.field == "spec.containers[*].resources"
    assert "17 vCPU" in caught.value.message and "16 vCPU / 120 GiB" in caught.value.message


def test_a_malformed_quantity_names_the_field() -> None:
    body = pod({"name": "a", "image": "x", "resources": {"limits": {"memory": "lots"}}})
    with pytest.raises(InvalidPodError) as caught:
        plan(body)
    assert caught.value.field == "spec.containers[0].resources.limits.memory"


# -- containers -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("container", "expected"),
    [
        (
            {"command": ["sh", "-c"], "args": ["echo hi"]},
            {"entryPoint": ["sh", "-c"], "command": ["echo hi"]},
        ),
        ({"command": ["/server"]}, {"entryPoint": ["/server"]}),
        ({"args": ["--port", "80"]}, {"command": ["--port", "80"]}),  # the image's entrypoint stays
        ({}, {}),
    ],
)
def test_command_is_the_entry_point_and_args_the_command(
    container: dict[str, Any], expected: dict[str, Any]
) -> None:
    definition = plan(pod({"name": "a", "image": "x", **container})).task_definition["containerDefinitions"][
        0
    ]
    assert {k: definition[k] for k in ("entryPoint", "command") if k in definition} == expected


def test_env_is_the_environment_and_secret_values_are_references_only() -> None:
    body = pod(
        {
            "name": "a",
            "image": "x",
            "env": [{"name": "PLAIN", "value": "visible"}, {"name": "TOKEN", "value": "s3cr3t-value"}],
        }
    )
    pod_in = prepared(body, secret_env=frozenset({("a", "TOKEN")}))
    assert mapping.secret_values(pod_in) == {"a.1": "s3cr3t-value"}
    result = mapping.task_plan(pod_in, CONFIG, "node-a", SECRET_ARN)
    definition = result.task_definition["containerDefinitions"][0]
    assert definition["environment"] == [{"name": "PLAIN", "value": "visible"}]
    assert definition["secrets"] == [{"name": "TOKEN", "valueFrom": f"{SECRET_ARN}:a.1::"}]
    assert "s3cr3t-value" not in json.dumps(result.task_definition)


def test_a_secret_variable_without_the_pods_secret_is_refused() -> None:
    body = pod({"name": "a", "image": "x", "env": [{"name": "TOKEN", "value": "v"}]})
    with pytest.raises(InvalidPodError) as caught:
        mapping.task_plan(prepared(body, secret_env=frozenset({("a", "TOKEN")})), CONFIG, "n", None)
    assert caught.value.field == "spec.containers[0].env[0]"


def test_replicas_share_one_task_definition_and_templates_do_not() -> None:
    first = plan(pod({"name": "a", "image": "x:1"}, uid="u1", name="web-1"))
    second = plan(pod({"name": "a", "image": "x:1"}, uid="u2", name="web-2"))
    other = plan(pod({"name": "a", "image": "x:2"}, uid="u3", name="web-3"))
    assert first.family == second.family and first.task_definition == second.task_definition
    assert other.family != first.family
    on_another_node = mapping.task_plan(prepared(pod({"name": "a", "image": "x:1"})), CONFIG, "node-b", None)
    assert on_another_node.family != first.family  # each node deregisters its own
    assert first.family == naming.family("node-a", first.digest) and len(first.family) <= 255


def test_ports_map_to_port_mappings_and_refuse_what_awsvpc_cannot() -> None:
    ports = [{"containerPort": 80}, {"containerPort": 53, "protocol": "UDP", "hostPort": 53}]
    definition = plan(pod({"name": "a", "image": "x", "ports": ports})).task_definition[
        "containerDefinitions"
    ][0]
    assert definition["portMappings"] == [
        {"containerPort": 80, "protocol": "tcp"},
        {"containerPort": 53, "protocol": "udp"},
    ]
    for bad, field in (
        ({"containerPort": 80, "protocol": "SCTP"}, "spec.containers[0].ports[0].protocol"),
        ({"containerPort": 80, "hostPort": 8080}, "spec.containers[0].ports[0].hostPort"),
        ({"containerPort": 0}, "spec.containers[0].ports[0].containerPort"),
    ):
        with pytest.raises(InvalidPodError) as caught:
            plan(pod({"name": "a", "image": "x", "ports": [bad]}))
        assert caught.value.field == field


def test_awslogs_configuration_and_essential_init_ordering() -> None:
    body = pod(
        {"name": "app", "image": "x"},
        {"name": "side", "image": "y"},
        initContainers=[{"name": "migrate", "image": "m"}, {"name": "seed", "image": "s"}],
    )
    result = plan(body)
    definitions = {d["name"]: d for d in result.task_definition["containerDefinitions"]}
    assert [d["name"] for d in result.task_definition["containerDefinitions"]] == [
        "migrate",
        "seed",
        "app",
        "side",
    ]
    assert definitions["migrate"]["essential"] is False and "dependsOn" not in definitions["migrate"]
    assert definitions["seed"]["dependsOn"] == [{"containerName": "migrate", "condition": "SUCCESS"}]
    for name in ("app", "side"):
        assert definitions[name]["essential"] is True
        assert definitions[name]["dependsOn"] == [{"containerName": "seed", "condition": "SUCCESS"}]
    assert definitions["app"]["logConfiguration"] == {
        "logDriver": "awslogs",
        "options": {
            "awslogs-group": "/virtual-kubelet/fargate",
            "awslogs-region": "eu-west-1",
            "awslogs-stream-prefix": "vk",
        },
    }
    assert result.init_containers == ("migrate", "seed")
    assert result.task_definition["networkMode"] == "awsvpc"
    assert result.task_definition["requiresCompatibilities"] == ["FARGATE"]
    assert result.task_definition["executionRoleArn"] == CONFIG.execution_role_arn


def test_every_container_gets_memory_within_the_task() -> None:
    body = pod(
        {"name": "a", "image": "x", "resources": {"limits": {"memory": "256Mi"}}},
        {"name": "b", "image": "x"},
        {"name": "c", "image": "x"},
    )
    result = plan(body)
    memory = {d["name"]: d["memory"] for d in result.task_definition["containerDefinitions"]}
    assert memory == {"a": 256, "b": 128, "c": 128}
    assert sum(memory.values()) <= result.size.memory


# -- volumes ---------------------------------------------------------------------------------------
def test_empty_dir_and_efs_volumes_and_their_mounts() -> None:
    body = pod(
        {
            "name": "a",
            "image": "x",
            "volumeMounts": [
                {"name": "scratch", "mountPath": "/tmp/s"},
                {"name": "shared", "mountPath": "/data", "readOnly": True},
            ],
        },
        volumes=[
            {"name": "scratch", "emptyDir": {}},
            {
                "name": "shared",
                "csi": {"driver": "efs.csi.aws.com", "volumeHandle": "fs-12345678:/exports:fsap-1"},
            },
        ],
    )
    volumes = {
        "scratch": ResolvedVolume("scratch", "emptyDir", {}, False, ""),
        "shared": ResolvedVolume(
            "shared",
            "csi",
            {},
            False,
            source={"driver": "efs.csi.aws.com", "volumeHandle": "fs-12345678:/exports:fsap-1"},
        ),
    }
    result = mapping.task_plan(prepared(body, volumes=volumes), CONFIG, "n", None)
    assert result.task_definition["volumes"] == [
        {"name": "scratch"},
        {
            "name": "shared",
            "efsVolumeConfiguration": {
                "fileSystemId": "fs-12345678",
                "transitEncryption": "ENABLED",
                "authorizationConfig": {"accessPointId": "fsap-1", "iam": "ENABLED"},
            },
        },
    ]
    assert result.task_definition["containerDefinitions"][0]["mountPoints"] == [
        {"sourceVolume": "scratch", "containerPath": "/tmp/s", "readOnly": False},
        {"sourceVolume": "shared", "containerPath": "/data", "readOnly": True},
    ]


def test_file_volumes_are_refused_naming_the_volume_and_the_token_is_skipped() -> None:
    token = {
        "name": "kube-api-access-x",
        "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]},
    }
    config_volume = {"name": "settings", "configMap": {"name": "cm"}}
    body = pod(
        {
            "name": "a",
            "image": "x",
            "volumeMounts": [{"name": "kube-api-access-x", "mountPath": "/var/run/secrets"}],
        },
        volumes=[token],
    )
    volumes = {"kube-api-access-x": ResolvedVolume("kube-api-access-x", "projected", {"token": b"t"}, True)}
    result = mapping.task_plan(prepared(body, volumes=volumes), CONFIG, "n", None)
    assert result.task_definition["volumes"] == []
    assert result.task_definition["containerDefinitions"][0]["mountPoints"] == []
    assert [w.reason for w in result.warnings] == ["ServiceAccountTokenNotMounted"]
    body = pod({"name": "a", "image": "x"}, volumes=[config_volume])
    volumes = {"settings": ResolvedVolume("settings", "configMap", {"k": b"v"}, False)}
    with pytest.raises(InvalidPodError) as caught:
        mapping.task_plan(prepared(body, volumes=volumes), CONFIG, "n", None)
    assert caught.value.field == "spec.volumes[0]" and "'settings'" in caught.value.message


# -- probes ----------------------------------------------------------------------------------------
def test_exec_probe_is_the_health_check_and_others_are_warnings() -> None:
    container = {
        "name": "a",
        "image": "x",
        "livenessProbe": {"exec": {"command": ["cat", "/ok"]}, "periodSeconds": 1, "failureThreshold": 20},
        "readinessProbe": {"httpGet": {"port": 80, "path": "/"}},
    }
    result = plan(pod(container))
    assert result.task_definition["containerDefinitions"][0]["healthCheck"] == {
        "command": ["CMD", "cat", "/ok"],
        "interval": 5,  # ECS's minimum
        "timeout": 2,
        "retries": 10,  # ECS's maximum
        "startPeriod": 0,
    }
    assert [(w.field, w.reason) for w in result.warnings] == [
        ("spec.containers[0].readinessProbe", "ProbeNotSupported")
    ]


def test_a_tcp_liveness_probe_is_a_warning_and_no_health_check() -> None:
    result = plan(pod({"name": "a", "image": "x", "livenessProbe": {"tcpSocket": {"port": 80}}}))
    assert "healthCheck" not in result.task_definition["containerDefinitions"][0]
    assert "tcpSocket" in str(result.warnings[0])


# -- RunTask ----------------------------------------------------------------------------------------
def test_run_task_request_has_ownership_tags_and_the_network() -> None:
    pod_in = prepared(
        pod(uid="0d4b6c9e-0000-4000-8000-000000000001", initContainers=[{"name": "i", "image": "x"}])
    )
    result = mapping.task_plan(pod_in, CONFIG, "node-a", None)
    request = mapping.run_task_request(
        pod_in, result, "arn:td", CONFIG.model_copy(update={"tags": {"team": "a"}}), "node-a"
    )
    assert request["startedBy"] == "0d4b6c9e-0000-4000-8000-000000000001"
    assert request["clientToken"] == "0d4b6c9e-0000-4000-8000-000000000001"  # a retried RunTask: one task
    assert request["launchType"] == "FARGATE" and request["taskDefinition"] == "arn:td"
    assert request["networkConfiguration"]["awsvpcConfiguration"] == {
        "subnets": ["subnet-0123456789abcdef0"],
        "securityGroups": ["sg-0123456789abcdef0"],
        "assignPublicIp": "DISABLED",
    }
    assert naming.tag_map(request["tags"]) == {
        "team": "a",
        naming.TAG_NODE: "node-a",
        naming.TAG_NAMESPACE: "ns",
        naming.TAG_NAME: "p",
        naming.TAG_UID: "0d4b6c9e-0000-4000-8000-000000000001",
        naming.TAG_INIT: "i",
    }


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"hostNetwork": True}, "spec.hostNetwork"),
        ({"containers": []}, "spec.containers"),
        ({"containers": [{"name": "a"}]}, "spec.containers[0].image"),
        (
            {"containers": [{"name": "a", "image": "x", "securityContext": {"privileged": True}}]},
            "spec.containers[0].securityContext.privileged",
        ),
    ],
)
def test_what_fargate_cannot_run_names_the_field(change: dict[str, Any], field: str) -> None:
    body = pod()
    body["spec"].update(copy.deepcopy(change))
    with pytest.raises(InvalidPodError) as caught:
        plan(body)
    assert caught.value.field == field


# -- config ----------------------------------------------------------------------------------------
def test_the_examples_validate() -> None:
    provider_file = yaml.safe_load((REPO / "examples/fargate-provider.yaml").read_text())
    values = yaml.safe_load((REPO / "examples/values-fargate.yaml").read_text())
    assert FargateConfig.model_validate(provider_file).cluster == "vk-fargate"
    assert FargateConfig.model_validate(values["providerConfig"]).subnets == ["subnet-0123456789abcdef0"]
    assert values["provider"] == "fargate"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"subnets": []}, "subnets"),
        ({"subnets": ["net-1"]}, "subnets"),
        ({"security_groups": ["sg-0123456789abcdef0", "sg-0123456789abcdef0"]}, None),
        ({"clusterr": "x"}, "clusterr"),
        ({"tags": {"vk-operator.uid": "x"}}, "tags"),
        ({"cpu": "lots"}, "cpu"),
        ({"region": "Europe"}, "region"),
    ],
)
def test_bad_config_is_refused_naming_the_field(change: dict[str, Any], field: str | None) -> None:
    base = CONFIG.model_dump()
    base.update(change)
    with pytest.raises(pydantic.ValidationError) as caught:
        FargateConfig.model_validate(base)
    if field is not None:
        assert field in str(caught.value)


def test_file_volumes_are_written_by_an_init_container_secret_files_from_the_secret() -> None:
    config = CONFIG.model_copy(update={"file_volumes": FileVolumes(init_image="busybox:1.36")})
    body = pod(
        {"name": "app", "image": "x", "volumeMounts": [{"name": "settings", "mountPath": "/etc/app"}]},
        volumes=[
            {"name": "settings", "configMap": {"name": "cm"}},
            {"name": "creds", "secret": {"secretName": "s"}},
        ],
        initContainers=[{"name": "migrate", "image": "m"}],
    )
    volumes = {
        "settings": ResolvedVolume(
            "settings", "configMap", {"app.conf": b"level=debug\n"}, False, modes={"app.conf": 0o600}
        ),
        "creds": ResolvedVolume("creds", "secret", {"token": b"t0ps3cret"}, True),
    }
    pod_in = prepared(body, volumes=volumes)
    assert mapping.secret_values(pod_in, with_files=True) == {"file.1": "dDBwczNjcmV0"}  # base64 of the token
    result = mapping.task_plan(pod_in, config, "n", SECRET_ARN)
    files, migrate, app = result.task_definition["containerDefinitions"]
    assert files["name"] == "vk-files" and files["essential"] is False and files["image"] == "busybox:1.36"
    assert files["environment"] == [{"name": "VK_FILE_0", "value": "bGV2ZWw9ZGVidWcK"}]
    assert files["secrets"] == [{"name": "VK_FILE_1", "valueFrom": f"{SECRET_ARN}:file.1::"}]
    script = files["command"][0]
    assert 'printf %s "$VK_FILE_0" | base64 -d > /vk-files/settings/app.conf' in script
    assert "chmod 600 /vk-files/settings/app.conf" in script
    assert {m["sourceVolume"] for m in files["mountPoints"]} == {"settings", "creds"}
    assert migrate["dependsOn"] == [{"containerName": "vk-files", "condition": "SUCCESS"}]
    assert app["dependsOn"] == [{"containerName": "migrate", "condition": "SUCCESS"}]
    assert app["mountPoints"] == [
        {"sourceVolume": "settings", "containerPath": "/etc/app", "readOnly": False}
    ]
    assert {"name": "settings"} in result.task_definition["volumes"]
    assert "t0ps3cret" not in json.dumps(result.task_definition) and "dDBwczNjcmV0" not in json.dumps(
        result.task_definition
    )
    assert result.init_containers == ("migrate",)  # the provider's own is not the pod's


@pytest.mark.parametrize(
    ("image", "registry"),
    [
        ("nginx", "docker.io"),
        ("library/nginx:1.27", "docker.io"),
        ("docker.io/library/nginx", "docker.io"),
        ("registry.example.com/team/app:1", "registry.example.com"),
        ("localhost:5000/app", "localhost:5000"),
        ("123456789012.dkr.ecr.eu-west-1.amazonaws.com/app", "123456789012.dkr.ecr.eu-west-1.amazonaws.com"),
    ],
)
def test_image_registry(image: str, registry: str) -> None:
    assert mapping.image_registry(image) == registry


def test_registry_logins_are_repository_credentials_by_image_registry() -> None:
    assert mapping.registry_server("https://index.docker.io/v1/") == "docker.io"
    arn = "arn:aws:secretsmanager:eu-west-1:1:secret:vk-operator/n/u/registry/registry.example.com-x"
    body = pod({"name": "a", "image": "registry.example.com/app:1"}, {"name": "b", "image": "nginx"})
    result = mapping.task_plan(prepared(body), CONFIG, "n", None, {"registry.example.com": arn})
    a, b = result.task_definition["containerDefinitions"]
    assert a["repositoryCredentials"] == {"credentialsParameter": arn}
    assert "repositoryCredentials" not in b


@pytest.mark.parametrize(
    ("node", "name", "ours"),
    [
        ("node-a", naming.family("node-a", "0123456789abcdef" * 4), True),
        ("node.a", naming.family("node.a", "f" * 64), True),  # only the first 32 of the hash
        ("node-a", naming.family("node-a-b", "0" * 32), False),  # another node's, with our prefix
        ("node-a", "vk-node-a-" + "0" * 31, False),
        ("node-a", "vk-node-a-" + "G" * 32, False),
        ("node-a", "vk-node-a-" + "0" * 32 + "-x", False),
        ("node-a", "my-app", False),
    ],
)
def test_the_shape_of_a_nodes_families(node: str, name: str, ours: bool) -> None:
    assert naming.is_family_of(node, name) is ours

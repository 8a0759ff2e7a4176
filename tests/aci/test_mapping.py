"""Pod -> container group, one table per aspect; the config model; the whole group against the spec."""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import pathlib
import re
from typing import Any

import jsonschema
import pydantic
import pytest
import yaml
from azure.mgmt.containerinstance.models import ContainerGroup

from providers.aci import mapping, naming
from providers.aci.config import AciConfig
from vk_operator.provider import (
    InvalidPodError,
    PreparedPod,
    RegistryCredential,
    ResolvedVolume,
    TransientError,
    parse_quantity,
)

REPO = pathlib.Path(__file__).resolve().parents[2]
SPEC_DIRS = [REPO / "providers/aci/localarm/spec", REPO.parent / "shared/specs/aci-2023-05-01"]
SUBNET = "/subscriptions/s/resourceGroups/net/providers/Microsoft.Network/virtualNetworks/vnet/subnets/aci"
UID = "0b9f3c1e-1111-2222-3333-444455556666"
BASE = {
    "subscription_id": "00000000-0000-0000-0000-000000000000",
    "resource_group": "vk",
    "region": "westeurope",
}


def _config(**overrides: Any) -> AciConfig:
    return AciConfig.model_validate({**BASE, **overrides})


CLUSTER_DNS = {
    "dns": {"nameservers": ["10.0.0.10"], "cluster_domain": "cluster.local", "options": ["ndots:5"]}
}
CONFIG = _config(**CLUSTER_DNS)  # a cluster DNS, as in the examples


def _container(**fields: Any) -> dict[str, Any]:
    return {"name": "app", "image": "nginx", **fields}


def _pod(
    *containers: dict[str, Any], annotations: dict[str, str] | None = None, **spec: Any
) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "shop", "name": "web-0", "uid": UID, "annotations": annotations or {}},
        "spec": {"containers": list(containers) or [_container()], **spec},
    }


def _prepared(
    pod: dict[str, Any], *volumes: ResolvedVolume, secret_env: frozenset[tuple[str, str]] = frozenset()
) -> PreparedPod:
    return PreparedPod(pod, {v.name: v for v in volumes}, secret_env)


def _raises_invalid(field: str) -> Any:
    return pytest.raises(InvalidPodError, match=f"^{re.escape(field)}: ")


def _spec() -> dict[str, Any]:
    for directory in SPEC_DIRS:
        if (directory / "containerInstance.json").exists():
            return dict(json.loads((directory / "containerInstance.json").read_text()))
    pytest.skip("no copy of the ACI spec")


def _validate(group: ContainerGroup) -> dict[str, Any]:
    """The body the SDK sends, checked against the spec's ContainerGroup schema."""
    body: dict[str, Any] = group.serialize()
    spec = _spec()
    schema = {"$ref": "#/definitions/ContainerGroup", "definitions": spec["definitions"]}
    jsonschema.Draft4Validator(schema).validate(body)
    return body


# --- config ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["examples/aci-provider.yaml", "examples/values-aci.yaml"])
def test_examples_validate(path: str) -> None:
    data = yaml.safe_load((REPO / path).read_text())
    config = AciConfig.model_validate(data.get("providerConfig", data))
    assert config.region == "westeurope"
    assert config.subnets and config.subnets[0].endswith("/subnets/aci")
    assert [str(ip) for ip in config.dns.nameservers] == ["10.0.0.10"]
    assert config.tags == {"team": "platform"}


def test_config_defaults() -> None:
    assert CONFIG.credential == "default"
    assert CONFIG.os_type == "Linux"
    assert (CONFIG.default_cpu, CONFIG.default_memory, CONFIG.gpu_sku) == ("1", "1.5G", "V100")
    assert CONFIG.subnets == []
    assert CONFIG.base_url is None
    assert CONFIG.status_poll.calls_per_minute == 60
    for quantity in (CONFIG.cpu, CONFIG.memory, CONFIG.pods):
        assert parse_quantity(quantity) > 0


def test_location_is_not_a_second_name_for_region() -> None:
    """One key (the examples'), so that the chart's copy of the schema says the same as the model."""
    with pytest.raises(pydantic.ValidationError, match="location"):
        AciConfig.model_validate({**BASE, "location": "eastus"})


@pytest.mark.parametrize(
    ("overrides", "problem"),
    [
        ({"regoin": "x"}, "regoin"),  # a typo is an error (extra=forbid)
        ({"cpu": "lots"}, "cpu"),
        ({"default_memory": "0"}, "greater than zero"),
        ({"credential": "password"}, "credential"),
        (
            {
                "credential": "environment",
                "managed_identity_client_id": "0b9f3c1e-1111-2222-3333-444455556666",
            },
            "applies to",
        ),
        ({"managed_identity_client_id": "my-identity"}, "GUID"),
        ({"subnet_id": "aci"}, "subnet_id"),
        ({"subnet_id": SUBNET, "subnet_ids": [SUBNET]}, "listed in subnet_ids"),
        ({"tags": {"vk-operator.uid": "x"}}, "ownership"),
        ({"tags": {"a/b": "x"}}, "forbids"),
        ({"dns": {"nameservers": ["cluster-dns"]}}, "nameservers"),
        ({"dns": {"options": ["ndots 5"]}}, "options"),
        ({"base_url": "management.azure.com"}, "base_url"),
        ({"resource_group": "ends-with-dot."}, "resource_group"),
        ({"dns_name_label_annotation": "not a key"}, "dns_name_label_annotation"),
        ({"status_poll": {"calls_per_minute": 0}}, "calls_per_minute"),
    ],
)
def test_config_refuses(overrides: dict[str, Any], problem: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=problem):
        _config(**overrides)


def test_config_requires_the_azure_coordinates() -> None:
    with pytest.raises(pydantic.ValidationError) as caught:
        AciConfig.model_validate({})
    assert {e["loc"][0] for e in caught.value.errors()} == {"subscription_id", "resource_group", "region"}


# --- containers ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, None),
        ({"command": ["nginx"]}, ["nginx"]),
        ({"command": ["sh", "-c"], "args": ["echo hi"]}, ["sh", "-c", "echo hi"]),
        ({"command": [], "args": []}, None),
        ({"args": ["--port", "80"]}, InvalidPodError),
    ],
)
def test_command(fields: dict[str, Any], expected: Any) -> None:
    if expected is InvalidPodError:
        with _raises_invalid("spec.containers[1].args") as caught:
            mapping.command(_container(**fields), "spec.containers[1]")
        assert "ACI needs the command" in str(caught.value)
    else:
        assert mapping.command(_container(**fields), "spec.containers[1]") == expected


def test_environment_secure_values() -> None:
    container = _container(
        env=[
            {"name": "MODE", "value": "prod"},
            {"name": "PASSWORD", "value": "s3cret"},
            {"name": "EMPTY", "value": ""},
            {"name": "MODE", "value": "staging"},  # a second MODE: the last value wins
            {"name": "UNSET"},
        ]
    )
    env = mapping.environment(container, frozenset({("app", "PASSWORD"), ("other", "MODE")}))
    assert [(e.name, e.value, e.secure_value) for e in env] == [
        ("MODE", "staging", None),
        ("PASSWORD", None, "s3cret"),
        ("EMPTY", "", None),
        ("UNSET", "", None),
    ]


@pytest.mark.parametrize(
    ("quantity", "cores"),
    [("1", 1.0), ("250m", 0.25), ("1001m", 1.01), ("1m", 0.01), ("0", 0.01), ("3.5", 3.5), ("4", 4.0)],
)
def test_cpu_cores_round_up_to_a_hundredth(quantity: str, cores: float) -> None:
    assert mapping.cpu_cores(parse_quantity(quantity)) == cores


@pytest.mark.parametrize(
    ("quantity", "gb"),
    [
        ("1G", 1.0),
        ("1.5G", 1.5),
        ("1Gi", 1.1),  # 1.073741824 GB
        ("512Mi", 0.6),  # 0.536870912
        ("128Mi", 0.2),  # 0.134217728: azure-aci rounded this down to 0.1
        ("100M", 0.1),
        ("100000001", 0.2),
        ("1", 0.1),
        ("16Gi", 17.2),
        ("0", 0.1),
    ],
)
def test_memory_gb_rounds_up_to_a_tenth(quantity: str, gb: float) -> None:
    assert mapping.memory_gb(parse_quantity(quantity)) == gb


@pytest.mark.parametrize(
    ("spec", "requests", "limits"),
    [
        ({}, (1.0, 1.5), None),  # azure-aci's defaults
        ({"requests": {"cpu": "250m", "memory": "256Mi"}}, (0.25, 0.3), None),
        ({"requests": {"cpu": "500m"}}, (0.5, 1.5), None),
        ({"limits": {"cpu": "2", "memory": "4Gi"}}, (2.0, 4.3), (2.0, 4.3)),  # requests default to limits
        ({"requests": {"cpu": "1", "memory": "1G"}, "limits": {"cpu": "2"}}, (1.0, 1.0), (2.0, None)),
        ({"requests": {"memory": "1G"}, "limits": {"memory": "2G"}}, (1.0, 1.0), (None, 2.0)),
        ({"requests": {"cpu": "1", "ephemeral-storage": "1Gi"}}, (1.0, 1.5), None),  # no ACI equivalent
    ],
)
def test_resources(
    spec: dict[str, Any], requests: tuple[float, float], limits: tuple[Any, Any] | None
) -> None:
    got = mapping.resources(_container(resources=spec), "spec.containers[0]", CONFIG, None)
    assert (got.requests.cpu, got.requests.memory_in_gb) == requests
    assert (None if got.limits is None else (got.limits.cpu, got.limits.memory_in_gb)) == limits


def test_resource_defaults_come_from_the_config() -> None:
    got = mapping.resources(_container(), "c", _config(default_cpu="500m", default_memory="2Gi"), None)
    assert (got.requests.cpu, got.requests.memory_in_gb) == (0.5, 2.2)


@pytest.mark.parametrize(
    ("resources", "annotations", "config", "expected"),
    [
        ({}, {}, {}, None),
        ({"limits": {"nvidia.com/gpu": "1"}}, {}, {}, (1, "V100")),
        ({"limits": {"nvidia.com/gpu": "2"}}, {"virtual-kubelet.io/gpu-type": "p100"}, {}, (2, "P100")),
        (
            {"limits": {"nvidia.com/gpu": "1"}},
            {"virtual-kubelet.io/gpu-type": "A100"},
            {},
            (1, "A100"),
        ),  # kept
        ({"limits": {"nvidia.com/gpu": "1"}}, {}, {"gpu_sku": "K80"}, (1, "K80")),
        ({"limits": {"nvidia.com/gpu": "1"}}, {"gpu": "P100"}, {"gpu_sku_annotation": "gpu"}, (1, "P100")),
        ({"requests": {"nvidia.com/gpu": "1"}}, {}, {}, (1, "V100")),
        ({"limits": {"nvidia.com/gpu": "0"}}, {}, {}, None),
        (
            {"limits": {"nvidia.com/gpu": "500m"}},
            {},
            {},
            "spec.containers[0].resources.limits[nvidia.com/gpu]",
        ),
        (
            {"limits": {"nvidia.com/gpu": "1"}},
            {},
            {"os_type": "Windows"},
            "spec.containers[0].resources.limits",
        ),
    ],
)
def test_gpu(
    resources: dict[str, Any], annotations: dict[str, str], config: dict[str, Any], expected: Any
) -> None:
    container = _container(resources=resources)
    if isinstance(expected, str):
        with pytest.raises(InvalidPodError, match=re.escape(expected)):
            mapping.gpu(container, "spec.containers[0]", _config(**config), annotations)
        return
    got = mapping.gpu(container, "spec.containers[0]", _config(**config), annotations)
    assert (None if got is None else (got.count, got.sku)) == expected


def test_gpu_goes_in_requests_and_limits() -> None:
    group, _ = mapping.container_group(
        _prepared(_pod(_container(resources={"limits": {"nvidia.com/gpu": "1", "cpu": "4"}}))), CONFIG, "vk"
    )
    resources = group.containers[0].resources
    assert resources.requests.gpu.count == 1 and resources.limits.gpu.sku == "V100"
    _validate(group)


@pytest.mark.parametrize(
    ("ports", "expected", "warned"),
    [
        ([], [], False),
        ([{"containerPort": 80}], [(80, "TCP")], False),
        (
            [{"containerPort": 53, "protocol": "UDP"}, {"containerPort": 80, "hostPort": 80}],
            [(53, "UDP"), (80, "TCP")],
            False,
        ),
        ([{"containerPort": 80, "hostPort": 8080}], [(80, "TCP")], True),
        ([{"containerPort": 9, "protocol": "SCTP"}], "spec.containers[0].ports[0].protocol", False),
    ],
)
def test_container_ports(ports: list[dict[str, Any]], expected: Any, warned: bool) -> None:
    warnings: list[mapping.MappingWarning] = []
    if isinstance(expected, str):
        with _raises_invalid(expected):
            mapping.container_ports(_container(ports=ports), "spec.containers[0]", warnings)
        return
    got = mapping.container_ports(_container(ports=ports), "spec.containers[0]", warnings)
    assert [(p.port, p.protocol) for p in got] == expected
    assert [w.field for w in warnings] == (["spec.containers[0].ports[0].hostPort"] if warned else [])


LABEL = "virtualkubelet.io/dnsnamelabel"


@pytest.mark.parametrize(
    ("ports", "annotations", "config", "expected", "warned"),
    [
        ([80], {}, {}, ("Public", [80], None), False),
        ([80, 443], {LABEL: "shop-web"}, {}, ("Public", [80, 443], "shop-web"), False),
        ([], {}, {}, None, False),
        ([], {LABEL: "shop-web"}, {}, None, True),  # a label without a public IP
        ([80], {}, {"subnet_id": SUBNET}, ("Private", [80], None), False),
        ([80], {LABEL: "shop-web"}, {"subnet_ids": [SUBNET]}, ("Private", [80], None), True),
        ([], {}, {"subnet_id": SUBNET}, None, False),
        ([80], {"my/label": "x"}, {"dns_name_label_annotation": "my/label"}, ("Public", [80], "x"), False),
    ],
)
def test_ip_address(
    ports: list[int], annotations: dict[str, str], config: dict[str, Any], expected: Any, warned: bool
) -> None:
    containers = [
        mapping.Container(
            name="a", image="i", resources=None, ports=[mapping.ContainerPort(port=p) for p in ports]
        )
    ]
    warnings: list[mapping.MappingWarning] = []
    got = mapping.ip_address(annotations, mapping.group_ports(containers), _config(**config), warnings)
    assert (None if got is None else (got.type, [p.port for p in got.ports], got.dns_name_label)) == expected
    assert bool(warnings) is warned


def test_group_ports_are_each_port_once() -> None:
    pod = _pod(
        _container(name="a", ports=[{"containerPort": 80}, {"containerPort": 53, "protocol": "UDP"}]),
        _container(name="b", ports=[{"containerPort": 80}, {"containerPort": 53}]),
    )
    group, _ = mapping.container_group(_prepared(pod), CONFIG, "vk")
    assert [(p.port, p.protocol) for p in group.ip_address.ports] == [(80, "TCP"), (53, "UDP"), (53, "TCP")]


@pytest.mark.parametrize(
    ("spec", "config", "expected", "reasons"),
    [
        (
            {},
            CLUSTER_DNS,
            (["10.0.0.10"], "shop.svc.cluster.local svc.cluster.local cluster.local", "ndots:5"),
            [],
        ),
        (
            {"dnsPolicy": "ClusterFirstWithHostNet"},
            CLUSTER_DNS,
            (["10.0.0.10"], "shop.svc.cluster.local svc.cluster.local cluster.local", "ndots:5"),
            [],
        ),
        (
            {
                "dnsConfig": {
                    "nameservers": ["1.1.1.1"],
                    "searches": ["corp.example", "cluster.local"],
                    "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}],
                }
            },
            CLUSTER_DNS,
            (
                ["10.0.0.10", "1.1.1.1"],
                "shop.svc.cluster.local svc.cluster.local cluster.local corp.example",
                "ndots:2 edns0",
            ),
            [],
        ),
        ({}, {}, None, [mapping.MISSING_CLUSTER_DNS]),  # the kubelet's fallback to Default
        ({"dnsPolicy": "Default"}, CLUSTER_DNS, None, []),  # ACI's resolver
        ({"dnsPolicy": "ClusterFirst", "hostNetwork": True}, CLUSTER_DNS, None, []),  # the kubelet's rule
        (
            {"dnsPolicy": "Default", "dnsConfig": {"nameservers": ["9.9.9.9"]}},
            CLUSTER_DNS,
            (["9.9.9.9"], None, None),
            [],
        ),
        (
            {"dnsPolicy": "Default", "dnsConfig": {"searches": ["corp.example"]}},
            CLUSTER_DNS,
            None,
            [mapping.UNSUPPORTED_FIELD],
        ),
        (
            {
                "dnsPolicy": "None",
                "dnsConfig": {
                    "nameservers": ["1.1.1.1", "8.8.8.8", "9.9.9.9", "1.0.0.1"],
                    "searches": ["a.example"],
                },
            },
            CLUSTER_DNS,
            (["1.1.1.1", "8.8.8.8", "9.9.9.9"], "a.example", None),
            [mapping.DNS_CONFIG_FORMING],
        ),
        (
            {
                "dnsPolicy": "None",
                "dnsConfig": {"nameservers": ["1.1.1.1"], "searches": [f"d{i}.example" for i in range(40)]},
            },
            {},
            (["1.1.1.1"], " ".join(f"d{i}.example" for i in range(32)), None),
            [mapping.DNS_CONFIG_FORMING],
        ),
        (
            {},
            {
                "dns": {
                    "nameservers": ["10.0.0.10"],
                    "search_domains": ["default.svc.cluster.local", "cluster.local"],
                }
            },
            (["10.0.0.10"], "default.svc.cluster.local cluster.local", None),
            [],
        ),
    ],
)
def test_dns_config(spec: dict[str, Any], config: dict[str, Any], expected: Any, reasons: list[str]) -> None:
    warnings: list[mapping.MappingWarning] = []
    got = mapping.dns_config(_pod(**spec), _config(**config), warnings)
    assert (None if got is None else (got.name_servers, got.search_domains, got.options)) == expected
    assert [w.reason for w in warnings] == reasons


@pytest.mark.parametrize(
    ("policy", "expected"),
    [(None, "Always"), ("Always", "Always"), ("OnFailure", "OnFailure"), ("Never", "Never")],
)
def test_restart_policy(policy: str | None, expected: str) -> None:
    assert mapping.restart_policy(_pod(**({"restartPolicy": policy} if policy else {}))) == expected


HTTP_PORTS = [{"name": "http", "containerPort": 8080}]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, None),
        (
            {"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 5},
            {"exec": {"command": ["cat", "/tmp/ready"]}, "periodSeconds": 5},
        ),
        (
            {
                "httpGet": {"path": "/healthz", "port": 8080},
                "initialDelaySeconds": 3,
                "timeoutSeconds": 1,
                "failureThreshold": 3,
                "successThreshold": 1,
            },
            {
                "httpGet": {"path": "/healthz", "port": 8080, "scheme": "http"},
                "initialDelaySeconds": 3,
                "failureThreshold": 3,
                "successThreshold": 1,
                "timeoutSeconds": 1,
            },
        ),
        ({"httpGet": {"port": "http", "scheme": "HTTPS"}}, {"httpGet": {"port": 8080, "scheme": "https"}}),
        ({"httpGet": {"port": "8081"}}, {"httpGet": {"port": 8081, "scheme": "http"}}),
        (
            {"httpGet": {"port": 80, "httpHeaders": [{"name": "X-Probe", "value": "1"}]}},
            {"httpGet": {"port": 80, "scheme": "http", "httpHeaders": [{"name": "X-Probe", "value": "1"}]}},
        ),
        ({"httpGet": {"port": "metrics"}}, "spec.containers[0].livenessProbe.httpGet.port"),
        ({"tcpSocket": {"port": 80}}, mapping.UNSUPPORTED_PROBE),  # a Warning, never a silent drop
        ({"grpc": {"port": 9090}}, mapping.UNSUPPORTED_PROBE),
    ],
)
def test_probe(spec: dict[str, Any] | None, expected: Any) -> None:
    container = _container(ports=HTTP_PORTS)
    field = "spec.containers[0].livenessProbe"
    warnings: list[mapping.MappingWarning] = []
    if isinstance(expected, str) and expected.startswith("spec."):
        with _raises_invalid(expected):
            mapping.probe(spec, container, field, warnings)
        return
    got = mapping.probe(spec, container, field, warnings)
    if expected == mapping.UNSUPPORTED_PROBE:
        assert got is None
        (warning,) = warnings
        assert (warning.field, warning.reason) == (field, mapping.UNSUPPORTED_PROBE)
        assert "'app'" in warning.message and "livenessProbe" in warning.message
        return
    assert (None if got is None else got.serialize()) == expected
    assert warnings == []


def test_probes_and_fields_aci_lacks_are_warned() -> None:
    container = _container(
        readinessProbe={"tcpSocket": {"port": 80}},
        startupProbe={"exec": {"command": ["true"]}},
        workingDir="/srv",
        lifecycle={"preStop": {"exec": {"command": ["sleep", "5"]}}},
    )
    group, warnings = mapping.container_group(
        _prepared(_pod(container, hostAliases=[{"ip": "1.2.3.4"}])), CONFIG, "vk"
    )
    assert group.containers[0].readiness_probe is None
    assert sorted((w.field, w.reason) for w in warnings) == [
        ("spec.containers[0].lifecycle", mapping.UNSUPPORTED_FIELD),
        ("spec.containers[0].readinessProbe", mapping.UNSUPPORTED_PROBE),
        ("spec.containers[0].startupProbe", mapping.UNSUPPORTED_PROBE),
        ("spec.containers[0].workingDir", mapping.UNSUPPORTED_FIELD),
        ("spec.hostAliases", mapping.UNSUPPORTED_FIELD),
    ]


@pytest.mark.parametrize(
    ("init", "expected", "warned"),
    [
        (
            {
                "name": "migrate",
                "image": "tool",
                "command": ["migrate"],
                "args": ["up"],
                "env": [{"name": "DB", "value": "x"}],
            },
            {
                "name": "migrate",
                "properties": {
                    "image": "tool",
                    "command": ["migrate", "up"],
                    "environmentVariables": [{"name": "DB", "value": "x"}],
                },
            },
            [],
        ),
        (
            {
                "name": "wait",
                "image": "busybox",
                "resources": {"requests": {"cpu": "100m"}},
                "ports": [{"containerPort": 1}],
            },
            {"name": "wait", "properties": {"image": "busybox"}},
            ["spec.initContainers[0].ports", "spec.initContainers[0].resources"],
        ),
        ({"name": "w", "image": "busybox", "args": ["x"]}, "spec.initContainers[0].args", []),
        (
            {"name": "proxy", "image": "envoy", "restartPolicy": "Always"},
            "spec.initContainers[0].restartPolicy",
            [],
        ),
    ],
)
def test_init_container(init: dict[str, Any], expected: Any, warned: list[str]) -> None:
    warnings: list[mapping.MappingWarning] = []
    prepared = _prepared(_pod(initContainers=[init]))
    if isinstance(expected, str):
        with _raises_invalid(expected):
            mapping.init_container(init, "spec.initContainers[0]", prepared, mapping.VolumePlan(), warnings)
        return
    got = mapping.init_container(init, "spec.initContainers[0]", prepared, mapping.VolumePlan(), warnings)
    assert got.serialize() == expected
    assert sorted(w.field for w in warnings) == warned


def test_init_container_secret_env_is_secure() -> None:
    init = {"name": "setup", "image": "tool", "env": [{"name": "TOKEN", "value": "t0k"}]}
    group, _ = mapping.container_group(
        _prepared(_pod(initContainers=[init]), secret_env=frozenset({("setup", "TOKEN")})), CONFIG, "vk"
    )
    (variable,) = group.init_containers[0].environment_variables
    assert (variable.value, variable.secure_value) == (None, "t0k")


# --- registry credentials --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("credentials", "expected"),
    [
        ((), []),
        (
            (RegistryCredential("myacr.azurecr.io", "u", "p", secret="acr"),),
            [{"server": "myacr.azurecr.io", "username": "u", "password": "p"}],
        ),
        (  # one per server: the first (the core gives one per server; two Secrets may repeat one)
            (
                RegistryCredential("myacr.azurecr.io", "u", "p"),
                RegistryCredential("myacr.azurecr.io", "u2", "p2"),
                RegistryCredential("ghcr.io", "me", "t:ok"),
            ),
            [
                {"server": "myacr.azurecr.io", "username": "u", "password": "p"},
                {"server": "ghcr.io", "username": "me", "password": "t:ok"},
            ],
        ),
        (
            (RegistryCredential("registry.example:5000", "robot$ci", ""),),
            [{"server": "registry.example:5000", "username": "robot$ci", "password": ""}],
        ),
    ],
)
def test_image_registry_credentials(
    credentials: tuple[RegistryCredential, ...], expected: list[dict[str, str]]
) -> None:
    pod = _pod(imagePullSecrets=[{"name": "acr"}])
    prepared = dataclasses.replace(_prepared(pod), registry_credentials=credentials)
    group, warnings = mapping.container_group(prepared, CONFIG, "vk")
    body = _validate(group)
    assert body["properties"].get("imageRegistryCredentials", []) == expected
    assert warnings == []  # a pull secret the core could not read is its Warning Event, not ours
    for credential in credentials:  # the password is in no repr (logs, tracebacks)
        assert not credential.password or credential.password not in repr(credential)


# --- volumes ---------------------------------------------------------------------------------------


def _volume_pod(volumes: list[dict[str, Any]], mounts: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return _pod(_container(volumeMounts=mounts), volumes=volumes, **spec)


def _map_volumes(
    pod: dict[str, Any], *resolved: ResolvedVolume, config: AciConfig = CONFIG
) -> tuple[ContainerGroup, list[mapping.MappingWarning]]:
    return mapping.container_group(_prepared(pod, *resolved), config, "vk")


def _enc(content: bytes) -> str:
    return base64.b64encode(content).decode()


def test_secret_volume_is_flat_when_its_files_are() -> None:
    resolved = ResolvedVolume(
        "cfg", "configMap", {"a.conf": b"A", "b.conf": b"B"}, False, modes={"a.conf": 0o644, "b.conf": 0o644}
    )
    group, warnings = _map_volumes(
        _volume_pod(
            [{"name": "cfg", "configMap": {"name": "cm"}}],
            [{"name": "cfg", "mountPath": "/etc/app", "readOnly": True}],
        ),
        resolved,
    )
    assert [(v.name, v.secret) for v in group.volumes] == [
        ("cfg", {"a.conf": _enc(b"A"), "b.conf": _enc(b"B")})
    ]
    assert [(m.name, m.mount_path, m.read_only) for m in group.containers[0].volume_mounts] == [
        ("cfg", "/etc/app", True)
    ]
    assert warnings == []
    _validate(group)


def test_secret_volume_paths_become_one_volume_per_directory() -> None:
    """items with paths (azure-aci flattened them): each directory its own ACI volume and mount."""
    files = {"token": b"t", "conf/app.yaml": b"a: 1", "conf/tls/tls.crt": b"CRT", "conf/tls/tls.key": b"KEY"}
    resolved = ResolvedVolume("bundle", "projected", files, True, modes=dict.fromkeys(files, 0o644))
    group, _ = _map_volumes(
        _volume_pod(
            [{"name": "bundle", "projected": {"sources": []}}],
            [{"name": "bundle", "mountPath": "/var/run/app"}],
        ),
        resolved,
    )
    conf, tls = mapping.sub_volume_name("bundle", "conf"), mapping.sub_volume_name("bundle", "conf/tls")
    assert [(v.name, v.secret) for v in group.volumes] == [
        ("bundle", {"token": _enc(b"t")}),
        (conf, {"app.yaml": _enc(b"a: 1")}),
        (tls, {"tls.crt": _enc(b"CRT"), "tls.key": _enc(b"KEY")}),
    ]
    assert [(m.name, m.mount_path) for m in group.containers[0].volume_mounts] == [
        ("bundle", "/var/run/app"),  # parents first
        (conf, "/var/run/app/conf"),
        (tls, "/var/run/app/conf/tls"),
    ]
    assert all(naming.is_valid_group_name(v.name) for v in group.volumes)
    _validate(group)


def test_secret_volume_with_files_only_below_the_root() -> None:
    resolved = ResolvedVolume("sec", "secret", {"keys/id_rsa": b"K"}, True, modes={"keys/id_rsa": 0o644})
    group, _ = _map_volumes(
        _volume_pod(
            [{"name": "sec", "secret": {"secretName": "s"}}], [{"name": "sec", "mountPath": "/root/.ssh"}]
        ),
        resolved,
    )
    sub = mapping.sub_volume_name("sec", "keys")
    assert [v.name for v in group.volumes] == [sub]
    assert [(m.name, m.mount_path) for m in group.containers[0].volume_mounts] == [(sub, "/root/.ssh/keys")]


def test_empty_secret_volume_is_an_empty_dir() -> None:
    resolved = ResolvedVolume("opt", "secret", {}, True)
    group, _ = _map_volumes(
        _volume_pod(
            [{"name": "opt", "secret": {"secretName": "missing", "optional": True}}],
            [{"name": "opt", "mountPath": "/opt"}],
        ),
        resolved,
    )
    assert [(v.name, v.empty_dir, v.secret) for v in group.volumes] == [("opt", {}, None)]
    _validate(group)


def test_file_modes_are_warned() -> None:
    resolved = ResolvedVolume(
        "scripts",
        "configMap",
        {"run.sh": b"#!/bin/sh", "x.conf": b""},
        False,
        modes={"run.sh": 0o755, "x.conf": 0o644},
    )
    _, warnings = _map_volumes(
        _volume_pod(
            [{"name": "scripts", "configMap": {"name": "s"}}], [{"name": "scripts", "mountPath": "/s"}]
        ),
        resolved,
    )
    (warning,) = warnings
    assert (warning.field, warning.reason) == ("spec.volumes[0]", mapping.UNSUPPORTED_FILE_MODE)
    assert "run.sh (0755)" in warning.message and "x.conf" not in warning.message


def test_empty_dir() -> None:
    resolved = ResolvedVolume("cache", "emptyDir", {}, False, medium="Memory", size_limit="1Gi")
    group, warnings = _map_volumes(
        _volume_pod(
            [{"name": "cache", "emptyDir": {"medium": "Memory"}}], [{"name": "cache", "mountPath": "/cache"}]
        ),
        resolved,
    )
    assert [(v.name, v.empty_dir) for v in group.volumes] == [("cache", {})]
    assert [w.field for w in warnings] == [
        "spec.volumes[0].emptyDir.medium",
        "spec.volumes[0].emptyDir.sizeLimit",
    ]
    _validate(group)


STORAGE = {"azurestorageaccountname": b"acct", "azurestorageaccountkey": b"k3y=="}  # the core read it


def _share(kind: str, source: dict[str, Any], secret: dict[str, bytes] | None = None) -> ResolvedVolume:
    """An Azure Files volume as the core hands it: the source, and the Secret it names, read."""
    return ResolvedVolume("share", kind, {}, secret is not None, source=source, secret=secret or {})


@pytest.mark.parametrize(
    ("volume", "expected"),
    [
        (
            _share(
                "azureFile", {"secretName": "azure-secret", "shareName": "data", "readOnly": True}, STORAGE
            ),
            {
                "shareName": "data",
                "storageAccountName": "acct",
                "storageAccountKey": "k3y==",
                "readOnly": True,
            },
        ),
        (
            _share(
                "csi",
                {
                    "driver": "file.csi.azure.com",
                    "nodePublishSecretRef": {"name": "azure-secret"},
                    "volumeAttributes": {"shareName": "data"},
                },
                STORAGE,
            ),
            {"shareName": "data", "storageAccountName": "acct", "storageAccountKey": "k3y=="},
        ),
        (  # the attribute names the same Secret as nodePublishSecretRef; readOnly on the volume
            _share(
                "csi",
                {
                    "driver": "file.csi.azure.com",
                    "readOnly": True,
                    "nodePublishSecretRef": {"name": "azure-secret"},
                    "volumeAttributes": {"shareName": "data", "secretName": "azure-secret"},
                },
                {"azurestorageaccountname": b"acct\n", "azurestorageaccountkey": b"k3y==\n"},
            ),
            {
                "shareName": "data",
                "storageAccountName": "acct",
                "storageAccountKey": "k3y==",
                "readOnly": True,
            },
        ),
        (_share("csi", {"driver": "disk.csi.azure.com"}, STORAGE), "spec.volumes[0].csi.driver"),
        (_share("azureFile", {"secretName": "azure-secret"}, STORAGE), "spec.volumes[0].azureFile.shareName"),
        (_share("azureFile", {"shareName": "data"}), "spec.volumes[0].azureFile.secretName"),
        (
            _share("csi", {"driver": "file.csi.azure.com", "volumeAttributes": {"shareName": "d"}}),
            "spec.volumes[0].csi.nodePublishSecretRef",
        ),
        (  # the core reads nodePublishSecretRef's Secret only: the key cannot be had
            _share(
                "csi",
                {
                    "driver": "file.csi.azure.com",
                    "volumeAttributes": {"secretName": "azure-secret", "shareName": "d"},
                },
            ),
            "spec.volumes[0].csi.volumeAttributes.secretName",
        ),
        (
            _share(
                "csi",
                {
                    "driver": "file.csi.azure.com",
                    "nodePublishSecretRef": {"name": "azure-secret"},
                    "volumeAttributes": {"secretName": "other", "shareName": "d"},
                },
                STORAGE,
            ),
            "spec.volumes[0].csi.volumeAttributes.secretName",
        ),
        (
            _share(
                "csi",
                {
                    "driver": "file.csi.azure.com",
                    "nodePublishSecretRef": {"name": "azure-secret"},
                    "volumeAttributes": {"secretNamespace": "infra", "shareName": "d"},
                },
                STORAGE,
            ),
            "spec.volumes[0].csi.volumeAttributes.secretNamespace",
        ),
    ],
)
def test_azure_files(volume: ResolvedVolume, expected: Any) -> None:
    pod = _volume_pod(
        [{"name": "share", volume.kind: dict(volume.source)}], [{"name": "share", "mountPath": "/data"}]
    )
    if isinstance(expected, str):
        with _raises_invalid(expected):
            _map_volumes(pod, volume)
        return
    group, warnings = _map_volumes(pod, volume)
    assert warnings == []
    assert group.volumes[0].azure_file.serialize() == expected
    assert group.containers[0].volume_mounts[0].read_only is bool(expected.get("readOnly"))
    _validate(group)
    assert "k3y" not in repr(volume)  # the key is in no repr of what the core hands over


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        ({"azurestorageaccountname": b"a"}, 'secret "azure-secret" has no azurestorageaccountkey'),
        ({"other": b"x"}, "has no azurestorageaccountname, azurestorageaccountkey"),
        ({"azurestorageaccountname": b"a", "azurestorageaccountkey": b"\xff"}, "must be text"),
    ],
)
def test_azure_files_secret_without_the_keys_is_transient(secret: dict[str, bytes], problem: str) -> None:
    volume = _share("azureFile", {"secretName": "azure-secret", "shareName": "data"}, secret)
    with pytest.raises(TransientError, match=problem) as caught:
        _map_volumes(_volume_pod([{"name": "share", "azureFile": {}}], []), volume)
    assert caught.value.reason == "FailedMount"
    assert "\\xff" not in str(caught.value) and "b'a'" not in str(caught.value)


def test_git_repo() -> None:
    volume = ResolvedVolume(
        "src",
        "gitRepo",
        {},
        False,
        source={"repository": "https://github.com/a/b", "revision": "main", "directory": "."},
    )
    group, _ = _map_volumes(
        _volume_pod([{"name": "src", "gitRepo": {}}], [{"name": "src", "mountPath": "/src"}]), volume
    )
    assert group.volumes[0].git_repo.serialize() == {
        "repository": "https://github.com/a/b",
        "revision": "main",
        "directory": ".",
    }
    _validate(group)


@pytest.mark.parametrize(
    ("mount", "field"),
    [
        (
            {"name": "cfg", "mountPath": "/etc/nginx/nginx.conf", "subPath": "nginx.conf"},
            "spec.containers[0].volumeMounts[0].subPath",
        ),
        (
            {"name": "cfg", "mountPath": "/x", "subPathExpr": "$(POD)"},
            "spec.containers[0].volumeMounts[0].subPathExpr",
        ),
        ({"name": "cfg", "mountPath": "C:/x"}, "spec.containers[0].volumeMounts[0].mountPath"),
        ({"name": "other", "mountPath": "/x"}, "spec.containers[0].volumeMounts[0].name"),
    ],
)
def test_volume_mounts_aci_cannot_express(mount: dict[str, Any], field: str) -> None:
    resolved = ResolvedVolume("cfg", "configMap", {"nginx.conf": b""}, False)
    with _raises_invalid(field):
        _map_volumes(_volume_pod([{"name": "cfg", "configMap": {"name": "c"}}], [mount]), resolved)


def test_windows_drops_the_service_account_token_and_refuses_other_volumes() -> None:
    windows = _config(os_type="Windows", **CLUSTER_DNS)
    token = ResolvedVolume("kube-api-access-x", "projected", {"token": b"t"}, True)
    token_spec = {
        "name": "kube-api-access-x",
        "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]},
    }
    mount = {"name": "kube-api-access-x", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}
    group, warnings = _map_volumes(_volume_pod([token_spec], [mount]), token, config=windows)
    assert group.volumes is None and group.containers[0].volume_mounts is None
    assert [(w.field, w.reason) for w in warnings] == [("spec.volumes[0]", mapping.UNSUPPORTED_VOLUME)]
    cache = ResolvedVolume("cache", "emptyDir", {}, False)
    with _raises_invalid("spec.volumes[1]"):
        _map_volumes(
            _volume_pod([token_spec, {"name": "cache", "emptyDir": {}}], [mount]),
            token,
            cache,
            config=windows,
        )


# --- SKU -------------------------------------------------------------------------------------------

SKU = "virtual-kubelet.io/container-sku"
CCE = "virtual-kubelet.io/confidential-compute-cce-policy"


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        ({}, (None, None)),
        ({SKU: "Confidential"}, ("Confidential", None)),
        ({SKU: "confidential"}, ("Confidential", None)),
        ({SKU: "Standard"}, ("Standard", None)),
        ({CCE: "cGFja2FnZQ=="}, ("Confidential", "cGFja2FnZQ==")),
        ({SKU: "Confidential", CCE: "cGFja2FnZQ=="}, ("Confidential", "cGFja2FnZQ==")),
        ({SKU: "Standard", CCE: "cGFja2FnZQ=="}, f"metadata.annotations[{SKU}]"),
        ({SKU: "Premium"}, f"metadata.annotations[{SKU}]"),
    ],
)
def test_sku(annotations: dict[str, str], expected: Any) -> None:
    if isinstance(expected, str):
        with _raises_invalid(expected):
            mapping.sku(annotations, CONFIG)
        return
    chosen, properties = mapping.sku(annotations, CONFIG)
    assert (chosen, properties.cce_policy if properties else None) == expected


# --- the whole group -------------------------------------------------------------------------------


FULL_POD: dict[str, Any] = {
    "metadata": {
        "namespace": "shop",
        "name": "web-0",
        "uid": UID,
        "annotations": {LABEL: "shop-web", SKU: "Confidential"},
    },
    "spec": {
        "restartPolicy": "OnFailure",
        "imagePullSecrets": [{"name": "acr"}],
        "initContainers": [{"name": "init", "image": "busybox", "command": ["sh", "-c", "echo init"]}],
        "containers": [
            {
                "name": "web",
                "image": "myacr.azurecr.io/web:1",
                "command": ["/web"],
                "args": ["--port", "8080"],
                "ports": [{"name": "http", "containerPort": 8080}],
                "env": [{"name": "MODE", "value": "prod"}, {"name": "DB_PASSWORD", "value": "hunter2"}],
                "resources": {
                    "requests": {"cpu": "500m", "memory": "512Mi"},
                    "limits": {"cpu": "1", "memory": "1Gi"},
                },
                "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 10},
                "readinessProbe": {"exec": {"command": ["cat", "/tmp/ready"]}},
                "volumeMounts": [
                    {"name": "config", "mountPath": "/etc/web", "readOnly": True},
                    {"name": "cache", "mountPath": "/cache"},
                    {"name": "share", "mountPath": "/data"},
                ],
            },
            {"name": "sidecar", "image": "envoy", "volumeMounts": [{"name": "cache", "mountPath": "/cache"}]},
        ],
        "volumes": [
            {
                "name": "config",
                "configMap": {"name": "web", "items": [{"key": "web.yaml", "path": "conf/web.yaml"}]},
            },
            {"name": "cache", "emptyDir": {}},
            {
                "name": "share",
                "csi": {
                    "driver": "file.csi.azure.com",
                    "nodePublishSecretRef": {"name": "azure-secret"},
                    "volumeAttributes": {"shareName": "data"},
                },
            },
        ],
    },
}


def _full() -> PreparedPod:
    return PreparedPod(
        copy.deepcopy(FULL_POD),
        {
            "config": ResolvedVolume(
                "config", "configMap", {"conf/web.yaml": b"port: 8080"}, False, modes={"conf/web.yaml": 0o644}
            ),
            "cache": ResolvedVolume("cache", "emptyDir", {}, False, medium=""),
            "share": ResolvedVolume(
                "share", "csi", {}, True, source=FULL_POD["spec"]["volumes"][2]["csi"], secret=STORAGE
            ),
        },
        frozenset({("web", "DB_PASSWORD")}),
        registry_credentials=(RegistryCredential("myacr.azurecr.io", "u", "p", secret="acr"),),
    )


def test_container_group_end_to_end() -> None:
    config = _config(tags={"team": "platform"}, **CLUSTER_DNS)
    group, warnings = mapping.container_group(_full(), config, "vk-aci")
    assert warnings == []
    body = _validate(group)
    props = body["properties"]
    assert body["location"] == "westeurope"
    assert naming.ref_from_tags(body["tags"]) == _full().ref and naming.owned_by(body["tags"], "vk-aci")
    assert body["tags"]["team"] == "platform"
    assert (
        props["osType"] == "Linux"
        and props["restartPolicy"] == "OnFailure"
        and props["sku"] == "Confidential"
    )
    assert props["ipAddress"] == {
        "ports": [{"protocol": "TCP", "port": 8080}],
        "type": "Public",
        "dnsNameLabel": "shop-web",
        "autoGeneratedDomainNameLabelScope": "Unsecure",
    }
    assert props["dnsConfig"]["nameServers"] == ["10.0.0.10"]
    assert props["imageRegistryCredentials"] == [
        {"server": "myacr.azurecr.io", "username": "u", "password": "p"}
    ]
    assert props["initContainers"] == [
        {"name": "init", "properties": {"image": "busybox", "command": ["sh", "-c", "echo init"]}}
    ]
    web, sidecar = props["containers"]
    assert web["properties"]["command"] == ["/web", "--port", "8080"]
    assert web["properties"]["environmentVariables"] == [
        {"name": "MODE", "value": "prod"},
        {"name": "DB_PASSWORD", "secureValue": "hunter2"},
    ]
    assert web["properties"]["resources"] == {
        "requests": {"memoryInGB": 0.6, "cpu": 0.5},
        "limits": {"memoryInGB": 1.1, "cpu": 1.0},
    }
    assert web["properties"]["livenessProbe"] == {
        "httpGet": {"path": "/healthz", "port": 8080, "scheme": "http"},
        "periodSeconds": 10,
    }
    conf = mapping.sub_volume_name("config", "conf")
    assert web["properties"]["volumeMounts"] == [
        {"name": conf, "mountPath": "/etc/web/conf", "readOnly": True},
        {"name": "cache", "mountPath": "/cache", "readOnly": False},
        {"name": "share", "mountPath": "/data", "readOnly": False},
    ]
    assert sidecar["properties"]["resources"] == {"requests": {"memoryInGB": 1.5, "cpu": 1.0}}
    assert [v["name"] for v in props["volumes"]] == [conf, "cache", "share"]
    assert "hunter2" not in json.dumps(
        {k: v for k, v in web["properties"].items() if k != "environmentVariables"}
    )


def test_private_group_in_the_subnet() -> None:
    group, _ = mapping.container_group(_full(), _config(subnet_id=SUBNET), "vk")
    body = _validate(group)
    assert body["properties"]["subnetIds"] == [{"id": SUBNET}]
    assert body["properties"]["ipAddress"]["type"] == "Private"
    assert "dnsNameLabel" not in body["properties"]["ipAddress"]


def test_minimal_pod() -> None:
    group, warnings = mapping.container_group(_prepared(_pod()), _config(), "vk")
    body = _validate(group)
    assert body["properties"]["containers"] == [
        {
            "name": "app",
            "properties": {"image": "nginx", "resources": {"requests": {"memoryInGB": 1.5, "cpu": 1.0}}},
        }
    ]
    assert "ipAddress" not in body["properties"] and "volumes" not in body["properties"]
    assert [w.reason for w in warnings] == [mapping.MISSING_CLUSTER_DNS]


def test_pod_without_containers_is_invalid() -> None:
    with _raises_invalid("spec.containers"):
        mapping.container_group(
            _prepared({"metadata": {"namespace": "a", "name": "b", "uid": "c"}, "spec": {}}), CONFIG, "vk"
        )


def test_volume_types_are_the_declared_ones() -> None:
    assert frozenset({"azureFile", "csi:file.csi.azure.com", "gitRepo"}) == mapping.VOLUME_TYPES

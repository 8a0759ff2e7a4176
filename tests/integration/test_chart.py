"""The Helm chart (charts/virtual-kubelet): lint and template in every TLS mode and for every provider,
the values schema, and one `helm install` on the real control plane whose ServiceAccount then runs the
virtual kubelet — proving the generated RBAC is sufficient, least-privilege, and that a missing rule is
a clear error rather than a hang."""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import pathlib
import subprocess
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pydantic
import pytest
import yaml

from providers.mock import MockConfig
from tests.conftest import REPO, VirtualNode, chart_rules, eventually, pod_phase, wait_phase
from vk_operator.cli import parse_settings
from vk_operator.config import provider_factories
from vk_operator.devcluster.build import HELM
from vk_operator.devcluster.cluster import Cluster
from vk_operator.kube import ApiError, Kube

CHART = REPO / "charts/virtual-kubelet"
EXAMPLES = REPO / "examples"
StartNode = Callable[..., Awaitable[VirtualNode]]
Helm = Callable[..., subprocess.CompletedProcess[str]]
Docs = list[dict[str, Any]]

# The rules the chart adds to files/rbac-rules.yaml, by mode.
CSR_RULE = {
    "apiGroups": ["certificates.k8s.io"],
    "resources": ["certificatesigningrequests"],
    "verbs": ["create", "get"],
}
SELF_APPROVE_RULES = [
    {
        "apiGroups": ["certificates.k8s.io"],
        "resources": ["certificatesigningrequests/approval"],
        "verbs": ["update"],
    },
    {
        "apiGroups": ["certificates.k8s.io"],
        "resources": ["signers"],
        "resourceNames": ["kubernetes.io/kubelet-serving"],
        "verbs": ["approve"],
    },
]
DELETE_NODES_RULE = {"apiGroups": [""], "resources": ["nodes"], "verbs": ["delete"]}
TLS_FILE_ARGS = [
    "--tls-cert-file=/etc/virtual-kubelet/tls/tls.crt",
    "--tls-key-file=/etc/virtual-kubelet/tls/tls.key",
]


# -- helpers -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    """The helm binary, with its cache/config/data homes in a scratch directory."""
    home = tmp_path_factory.mktemp("helm-home")
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    binary = HELM.directory() / "helm"
    if not binary.is_file():
        pytest.fail(f"helm is not built at {binary}: run `python -m vk_operator.devcluster build`")

    def run(*args: str | pathlib.Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(
            [str(binary), *map(str, args)], capture_output=True, text=True, env=env, timeout=120
        )
        if check and out.returncode != 0:
            raise AssertionError(f"helm {' '.join(map(str, args))} failed:\n{out.stderr}")
        return out

    return run


def render(helm: Helm, *args: str, namespace: str = "vk-test") -> Docs:
    out = helm("template", "vk", CHART, "--namespace", namespace, *args)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def find(docs: Docs, kind: str) -> dict[str, Any]:
    found = [doc for doc in docs if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def kinds(docs: Docs) -> set[str]:
    return {doc["kind"] for doc in docs}


def container(docs: Docs) -> dict[str, Any]:
    return find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]  # type: ignore[no-any-return]


def args_of(docs: Docs) -> list[str]:
    return container(docs)["args"]  # type: ignore[no-any-return]


def provider_config(docs: Docs) -> Any:
    return yaml.safe_load(find(docs, "ConfigMap")["data"]["config.yaml"])


def example(name: str) -> Any:
    return yaml.safe_load((EXAMPLES / name).read_text())


# -- lint and template: every TLS mode, every provider -------------------------------------------------


def check_default(docs: Docs) -> None:
    assert find(docs, "ClusterRole")["rules"] == chart_rules()
    assert kinds(docs) == {"ServiceAccount", "ConfigMap", "ClusterRole", "ClusterRoleBinding"} | {
        "Role",
        "RoleBinding",
        "Service",
        "Deployment",
    }
    args = args_of(docs)
    assert "--provider=mock" in args
    assert "--provider-config=configmap:vk-test/vk-virtual-kubelet-provider-config" in args
    assert not [a for a in args if a.startswith(("--tls", "--serving-cert"))]


def check_existing_secret(docs: Docs) -> None:
    assert all(a in args_of(docs) for a in TLS_FILE_ARGS)
    volumes = find(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "tls", "secret": {"secretName": "my-serving-cert"}} in volumes
    assert {"name": "tls", "mountPath": "/etc/virtual-kubelet/tls", "readOnly": True} in container(docs)[
        "volumeMounts"
    ]
    assert find(docs, "ClusterRole")["rules"] == chart_rules()


def check_cert_manager(docs: Docs) -> None:
    cert = find(docs, "Certificate")
    assert cert["apiVersion"] == "cert-manager.io/v1"
    assert cert["spec"]["issuerRef"] == {
        "name": "cluster-ca",
        "kind": "ClusterIssuer",
        "group": "cert-manager.io",
    }
    assert cert["spec"]["commonName"] == "system:node:vk-virtual-kubelet"
    assert "server auth" in cert["spec"]["usages"]
    volumes = find(docs, "Deployment")["spec"]["template"]["spec"]["volumes"]
    assert {"name": "tls", "secret": {"secretName": cert["spec"]["secretName"]}} in volumes
    assert all(a in args_of(docs) for a in TLS_FILE_ARGS)


def check_csr(docs: Docs) -> None:
    args = args_of(docs)
    assert "--serving-cert-csr" in args and "--serving-cert-self-approve" not in args
    assert find(docs, "ClusterRole")["rules"] == [*chart_rules(), CSR_RULE]
    assert "Certificate" not in kinds(docs)


def check_csr_self_approve(docs: Docs) -> None:
    assert {"--serving-cert-csr", "--serving-cert-self-approve"} <= set(args_of(docs))
    assert find(docs, "ClusterRole")["rules"] == [*chart_rules(), CSR_RULE, *SELF_APPROVE_RULES]


def check_mock(docs: Docs) -> None:
    assert provider_config(docs) == example("mock-provider.yaml")
    MockConfig.model_validate(provider_config(docs))  # what the process will accept
    assert "--nodename=vk-mock" in args_of(docs)


def check_aci(docs: Docs) -> None:
    assert "--provider=aci" in args_of(docs)
    assert provider_config(docs) == example("aci-provider.yaml")
    assert container(docs)["envFrom"] == [{"secretRef": {"name": "aci-credentials"}}]
    assert "Secret" not in kinds(docs)  # existingSecret: the chart creates none
    assert "--serving-cert-csr" in args_of(docs)
    monitor = find(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"


def check_azurebatch(docs: Docs) -> None:
    assert "--provider=azurebatch" in args_of(docs)
    assert provider_config(docs) == example("azurebatch-provider.yaml")
    annotations = find(docs, "ServiceAccount")["metadata"]["annotations"]
    assert annotations["azure.workload.identity/client-id"]
    labels = find(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert labels["azure.workload.identity/use"] == "true"


def check_fargate(docs: Docs) -> None:
    assert "--provider=fargate" in args_of(docs)
    assert provider_config(docs) == example("fargate-provider.yaml")
    annotations = find(docs, "ServiceAccount")["metadata"]["annotations"]
    assert annotations["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")


def check_remove_node_on_exit(docs: Docs) -> None:
    assert "--remove-node-on-exit" in args_of(docs)
    assert find(docs, "ClusterRole")["rules"] == [*chart_rules(), DELETE_NODES_RULE]


def check_credentials(docs: Docs) -> None:
    secret = find(docs, "Secret")
    assert secret["stringData"] == {"AWS_ACCESS_KEY_ID": "AKIAEXAMPLE", "AWS_SECRET_ACCESS_KEY": "s3cr3t"}
    assert container(docs)["envFrom"] == [{"secretRef": {"name": secret["metadata"]["name"]}}]
    assert "checksum/credentials" in find(docs, "Deployment")["spec"]["template"]["metadata"]["annotations"]


def check_set_file(docs: Docs) -> None:
    assert provider_config(docs) == example("mock-provider.yaml")


def sets(values: dict[str, str]) -> list[str]:
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]


CASES = [
    pytest.param([], check_default, id="defaults"),
    pytest.param(sets({"tls.mode": "selfSigned"}), check_default, id="tls-selfSigned"),
    pytest.param(
        sets({"tls.mode": "existingSecret", "tls.existingSecret": "my-serving-cert"}),
        check_existing_secret,
        id="tls-existingSecret",
    ),
    pytest.param(
        sets(
            {
                "tls.mode": "certManager",
                "tls.certManager.issuerRef.name": "cluster-ca",
                "tls.certManager.issuerRef.kind": "ClusterIssuer",
            }
        ),
        check_cert_manager,
        id="tls-certManager",
    ),
    pytest.param(sets({"tls.mode": "csr"}), check_csr, id="tls-csr"),
    pytest.param(
        sets({"tls.mode": "csr", "tls.csr.selfApprove": "true"}),
        check_csr_self_approve,
        id="tls-csr-selfApprove",
    ),
    pytest.param(["-f", str(EXAMPLES / "values-mock.yaml")], check_mock, id="provider-mock"),
    pytest.param(["-f", str(EXAMPLES / "values-aci.yaml")], check_aci, id="provider-aci"),
    pytest.param(
        ["-f", str(EXAMPLES / "values-azurebatch.yaml")], check_azurebatch, id="provider-azurebatch"
    ),
    pytest.param(sets({"removeNodeOnExit": "true"}), check_remove_node_on_exit, id="removeNodeOnExit"),
    pytest.param(
        sets(
            {
                "credentials.env.AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
                "credentials.env.AWS_SECRET_ACCESS_KEY": "s3cr3t",
            }
        ),
        check_credentials,
        id="credentials",
    ),
    pytest.param(
        ["--set-file", f"providerConfig={EXAMPLES / 'mock-provider.yaml'}"], check_set_file, id="set-file"
    ),
]


@pytest.mark.parametrize(("values", "check"), CASES)
def test_lint_and_template(helm: Helm, values: list[str], check: Callable[[Docs], None]) -> None:
    """`helm lint --strict` passes, the rendering is what the mode/provider asks for, and every flag the
    Deployment passes is one `virtual-kubelet` accepts (parsed by the real CLI parser)."""
    lint = helm("lint", "--strict", CHART, *values)
    assert "0 chart(s) failed" in lint.stdout, lint.stdout + lint.stderr
    docs = render(helm, *values)
    check(docs)
    args = [a.replace("$(POD_IP)", "10.0.0.7") for a in args_of(docs)]
    command, settings = parse_settings(args)
    assert command == "run"
    assert settings.node_ip == "10.0.0.7"
    assert settings.kubelet_port == 10250 and settings.metrics_port == 10255


def test_workload_shape(helm: Helm) -> None:
    """helm-create conventions plus what a kubelet needs: one replica recreated, non-root, read-only
    root filesystem, probes on the metrics port, standard labels on every object."""
    docs = render(helm)
    deployment = find(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["serviceAccountName"] == find(docs, "ServiceAccount")["metadata"]["name"]
    assert pod["enableServiceLinks"] is False  # VK_<SERVICE>_PORT variables would collide with settings
    c = container(docs)
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]  # writable scratch space
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"kubelet": 10250, "metrics": 10255}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}} in c["env"]
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "virtual-kubelet", doc["kind"]
        assert labels["app.kubernetes.io/instance"] == "vk", doc["kind"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm", doc["kind"]
        assert labels["app.kubernetes.io/version"] == "0.1.0", doc["kind"]
    assert deployment["spec"]["selector"]["matchLabels"] == find(docs, "Service")["spec"]["selector"]


def test_config_change_rolls_the_pod(helm: Helm) -> None:
    def checksum(*values: str) -> str | None:
        template = find(render(helm, *values), "Deployment")["spec"]["template"]["metadata"]
        return (template.get("annotations") or {}).get("checksum/config")

    eight = checksum("--set-string", "providerConfig.cpu=8")
    assert eight and eight == checksum("--set-string", "providerConfig.cpu=8")  # deterministic
    assert eight != checksum("--set-string", "providerConfig.cpu=16")
    assert checksum("--set-string", "providerConfig.cpu=8", "--set", "rollOnConfigChange=false") is None


BAD_VALUES = [
    pytest.param("provder=aci", "at '': additional properties 'provder' not allowed", id="top-level-typo"),
    pytest.param("image.tagg=v1", "at '/image': additional properties 'tagg' not allowed", id="nested-typo"),
    pytest.param(
        "tls.certManager.issuerRef.nmae=ca",
        "at '/tls/certManager/issuerRef': additional properties 'nmae' not allowed",
        id="deep-typo",
    ),
    pytest.param(
        "provider=docker",
        "at '/provider': value must be one of "
        + ", ".join(f"'{name}'" for name in sorted(provider_factories())),
        id="provider-enum",
    ),
    pytest.param(
        "tls.mode=letsencrypt",
        "at '/tls/mode': value must be one of 'selfSigned', 'existingSecret', 'certManager', 'csr'",
        id="tls-mode-enum",
    ),
    pytest.param("kubeletPort=70000", "at '/kubeletPort': maximum: got 70,000, want 65,535", id="port-range"),
    pytest.param("client.burst=many", "at '/client/burst': got string, want integer", id="wrong-type"),
    pytest.param(
        "providerConfig.cpuu=8",
        "at '/providerConfig': additional properties 'cpuu' not allowed",
        id="mock-typo",
    ),
    pytest.param("providerConfig.cpu=8", "at '/providerConfig/cpu': got number, want string", id="mock-type"),
    pytest.param(
        "provider=aci,providerConfig.resource_groupp=rg",
        "additional properties 'resource_groupp' not allowed",
        id="aci-typo",
    ),
    pytest.param("tls.mode=existingSecret", "at '/tls/existingSecret': minLength", id="tls-secret-missing"),
]


@pytest.mark.parametrize(("value", "message"), BAD_VALUES)
def test_schema_rejects_bad_values(helm: Helm, value: str, message: str) -> None:
    out = helm("template", "vk", CHART, "--set", value, check=False)
    assert out.returncode != 0
    assert "values don't meet the specifications of the schema" in out.stderr
    assert message in out.stderr, out.stderr


def provider_config_schema(model: type[pydantic.BaseModel]) -> dict[str, Any]:
    """A provider's pydantic config model as a self-contained JSON schema (its $defs inlined)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                target = defs[node["$ref"].rpartition("/")[2]]
                return inline({**target, **{k: v for k, v in node.items() if k != "$ref"}})
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return inline(schema)  # type: ignore[no-any-return]


def with_provider_schemas(values_schema: dict[str, Any]) -> dict[str, Any]:
    """The chart's values schema with ``provider`` one of the installed providers and each one's
    ``providerConfig`` (when given as a mapping) checked against that provider's config model."""
    factories = provider_factories()
    schema = copy.deepcopy(values_schema)
    schema["properties"]["provider"]["enum"] = sorted(factories)
    schema["allOf"] = [
        {
            "if": {"properties": {"provider": {"const": name}}},
            "then": {
                "properties": {
                    "providerConfig": {
                        "if": {"type": "object"},
                        "then": {"$ref": f"#/definitions/{name}ProviderConfig"},
                    }
                }
            },
        }
        for name in sorted(factories)
    ]
    schema["definitions"] = {
        f"{name}ProviderConfig": provider_config_schema(factories[name].config_model)
        for name in sorted(factories)
    }
    return schema


def test_schema_checks_every_providers_config_as_the_process_will() -> None:
    """`--set providerConfig.cpu=8` (a number where the model wants a string) or a typo'd key fails at
    install, not in a crash-looping pod: the chart's copy of each provider's config schema must be
    current. Regenerate it with `python -m tests.integration.test_chart`."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema == with_provider_schemas(schema), (
        "a provider or its config model changed: regenerate the chart's schema with"
        " `python -m tests.integration.test_chart`"
    )


# -- helm install on the real control plane -------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    fullname: str
    kubectl: str
    admin_kubeconfig: pathlib.Path

    @property
    def service_account(self) -> str:
        return self.fullname

    @property
    def configmap(self) -> str:
        return f"{self.fullname}-provider-config"

    @property
    def cluster_role_path(self) -> str:
        return f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{self.fullname}"


@pytest.fixture(scope="module")
def release(cluster: Cluster, helm: Helm) -> Iterator[Release]:
    """One `helm install` (default values, a small mock capacity) into a fresh namespace per module."""
    suffix = uuid.uuid4().hex[:6]
    namespace = f"t-chart-{suffix}"
    kubeconfig = cluster.admin_kubeconfig
    kubectl = str(cluster.state()["binaries"]["kubectl"])  # type: ignore[index]
    # A unique release name: the ClusterRole and its binding are cluster-scoped.
    rel = Release(f"vk{suffix}", namespace, f"vk{suffix}-virtual-kubelet", kubectl, kubeconfig)
    values = [
        "--set-string",
        "providerConfig.cpu=7,providerConfig.memory=14Gi,providerConfig.pods=70",
        # No node can take the release's own pod (there is no image to run anyway): it stays Pending.
        "--set-string",
        "nodeSelector.vk-operator-chart-test=nowhere",
    ]
    helm(
        "install",
        rel.name,
        CHART,
        f"--kubeconfig={kubeconfig}",
        "-n",
        namespace,
        "--create-namespace",
        *values,
    )
    try:
        yield rel
    finally:
        helm("uninstall", rel.name, f"--kubeconfig={kubeconfig}", "-n", namespace, "--wait")
        selector = f"app.kubernetes.io/instance={rel.name},app.kubernetes.io/name=virtual-kubelet"
        get = [kubectl, f"--kubeconfig={kubeconfig}", "get", "clusterroles,clusterrolebindings", "-o=name"]
        leftovers = subprocess.run([*get, "-l", selector], capture_output=True, text=True, check=True).stdout
        delete = [kubectl, f"--kubeconfig={kubeconfig}", "delete", "namespace", namespace, "--wait=false"]
        subprocess.run(delete, capture_output=True, check=False)
        assert not leftovers.strip(), f"helm uninstall left cluster-scoped objects: {leftovers}"


async def serviceaccount_kubeconfig(
    admin: Kube, cluster: Cluster, rel: Release, path: pathlib.Path
) -> pathlib.Path:
    """A kubeconfig with a TokenRequest token of the chart's ServiceAccount: what the pod would use."""
    token = (
        await admin.create(
            f"/api/v1/namespaces/{rel.namespace}/serviceaccounts/{rel.service_account}/token",
            {"spec": {"expirationSeconds": 3600}},
        )
    )["status"]["token"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "chart",
        "clusters": [
            {
                "name": "local",
                "cluster": {
                    "server": cluster.server,
                    "certificate-authority": str(cluster.pki_dir / "ca.crt"),
                },
            }
        ],
        "users": [{"name": rel.service_account, "user": {"token": token}}],
        "contexts": [{"name": "chart", "context": {"cluster": "local", "user": rel.service_account}}],
    }
    path.write_text(json.dumps(config))
    return path


async def delete_node(admin: Kube, name: str) -> None:
    try:
        await admin.delete(f"/api/v1/nodes/{name}")
    except ApiError as exc:
        if not exc.not_found:
            raise


async def allowed(
    admin: Kube, rel: Release, verb: str, resource: str, namespace: str = "", group: str = ""
) -> bool:
    """Would the chart's ServiceAccount be allowed? (a SubjectAccessReview, as the apiserver decides)"""
    review = await admin.create(
        "/apis/authorization.k8s.io/v1/subjectaccessreviews",
        {
            "spec": {
                "user": f"system:serviceaccount:{rel.namespace}:{rel.service_account}",
                "groups": ["system:serviceaccounts", f"system:serviceaccounts:{rel.namespace}"],
                "resourceAttributes": {
                    "group": group,
                    "verb": verb,
                    "resource": resource,
                    "namespace": namespace,
                },
            }
        },
    )
    return bool(review["status"].get("allowed"))


async def test_install_creates_the_release(release: Release, admin: Kube) -> None:
    """The objects exist as rendered; the Deployment's own pod waits (no real node, no image pulled)."""
    ns = release.namespace
    deployment = await admin.get(f"/apis/apps/v1/namespaces/{ns}/deployments/{release.fullname}")
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    configmap = await admin.get(f"/api/v1/namespaces/{ns}/configmaps/{release.configmap}")
    assert yaml.safe_load(configmap["data"]["config.yaml"]) == {"cpu": "7", "memory": "14Gi", "pods": "70"}
    role = await admin.get(release.cluster_role_path)
    assert role["rules"] == chart_rules()

    async def unschedulable_pod() -> dict[str, Any] | None:
        pods = await admin.get(
            f"/api/v1/namespaces/{ns}/pods", labelSelector=f"app.kubernetes.io/instance={release.name}"
        )
        conditions = [c for p in pods["items"] for c in p["status"].get("conditions", [])]
        scheduled = [c for c in conditions if c["type"] == "PodScheduled"]
        return pods["items"][0] if scheduled and scheduled[0]["reason"] == "Unschedulable" else None

    pod = await eventually(unschedulable_pod, what="the release's pod, unschedulable")
    assert pod["status"]["phase"] == "Pending"
    assert pod["spec"]["serviceAccountName"] == release.service_account
    assert pod["metadata"]["annotations"]["checksum/config"]


async def test_release_rbac_is_least_privilege(release: Release, admin: Kube, namespace: str) -> None:
    """The Role reads the provider ConfigMap in the release namespace only; nothing beyond the rules."""
    ns = release.namespace
    for verb in ("get", "list", "watch"):
        assert await allowed(admin, release, verb, "configmaps", ns), verb
    assert await allowed(admin, release, "create", "events", ns)
    assert await allowed(admin, release, "get", "configmaps", namespace)  # env resolution: get anywhere
    assert not await allowed(admin, release, "watch", "configmaps", namespace)
    assert not await allowed(admin, release, "list", "secrets", namespace)
    assert not await allowed(admin, release, "update", "pods", namespace)
    assert not await allowed(admin, release, "delete", "nodes")  # removeNodeOnExit is off
    assert not await allowed(
        admin, release, "create", "certificatesigningrequests", group="certificates.k8s.io"
    )
    assert not await allowed(admin, release, "*", "*")


def test_install_with_a_typo_fails_and_installs_nothing(release: Release, helm: Helm) -> None:
    kubeconfig = f"--kubeconfig={release.admin_kubeconfig}"
    out = helm(
        "install", "typo", CHART, kubeconfig, "-n", release.namespace, "--set", "kubeletPrt=1", check=False
    )
    assert out.returncode != 0
    assert "at '': additional properties 'kubeletPrt' not allowed" in out.stderr, out.stderr
    listed = helm("list", "-a", "-q", kubeconfig, "-n", release.namespace)
    assert listed.stdout.split() == [release.name]


async def create_manifest(admin: Kube, namespace: str, doc: dict[str, Any]) -> None:
    api = {
        "Deployment": "/apis/apps/v1",
        "Job": "/apis/batch/v1",
        "ConfigMap": "/api/v1",
        "Secret": "/api/v1",
        "Pod": "/api/v1",
    }[doc["kind"]]
    await admin.create(f"{api}/namespaces/{namespace}/{doc['kind'].lower()}s", doc)


def pin_to_node(doc: dict[str, Any], node: str) -> dict[str, Any]:
    """Keep the example's own selector and toleration; also pin it to this test's node (a session has
    other virtual nodes)."""
    spec = doc["spec"]["template"]["spec"] if "template" in doc["spec"] else doc["spec"]
    assert spec["nodeSelector"] == {"type": "virtual-kubelet"}
    assert spec["tolerations"][0]["key"] == "virtual-kubelet.io/provider"
    spec["nodeSelector"]["kubernetes.io/hostname"] = node
    return doc


async def test_chart_serviceaccount_runs_the_virtual_kubelet(
    release: Release,
    admin: Kube,
    cluster: Cluster,
    namespace: str,
    virtual_node: StartNode,
    tmp_path: pathlib.Path,
) -> None:
    """The process under the chart's ServiceAccount token and its ConfigMap: the Node is Ready with the
    ConfigMap's capacity, the examples (Deployment, Job, pod with env from ConfigMap/Secret) run, and
    logs come back through the apiserver (TokenReview/SubjectAccessReview rights)."""
    kubeconfig = await serviceaccount_kubeconfig(admin, cluster, release, tmp_path / "chart-sa.kubeconfig")
    vn = await virtual_node(
        "--provider-config", f"configmap:{release.namespace}/{release.configmap}", kubeconfig=kubeconfig
    )
    try:
        node = await admin.get(f"/api/v1/nodes/{vn.name}")
        assert node["status"]["capacity"]["cpu"] == "7"  # from the chart's ConfigMap
        assert node["status"]["capacity"]["pods"] == "70"

        for name in ("deployment.yaml", "job.yaml", "pod-env.yaml"):
            for doc in yaml.safe_load_all((EXAMPLES / name).read_text()):
                if doc["kind"] in ("Deployment", "Job", "Pod"):
                    doc = pin_to_node(doc, vn.name)
                await create_manifest(admin, namespace, doc)

        async def deployment_running() -> bool:
            pods = await admin.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector="app=hello-virtual")
            return [p["status"].get("phase") for p in pods["items"]] == ["Running"] * 3

        await eventually(deployment_running, what="the example Deployment's 3 pods Running", timeout=60)
        await wait_phase(admin, namespace, "hello-env", "Running")

        async def job_complete() -> bool:
            job = await admin.get(f"/apis/batch/v1/namespaces/{namespace}/jobs/hello-job")
            return bool(job.get("status", {}).get("succeeded"))

        await eventually(job_complete, what="the example Job succeeded", timeout=60)

        async def logs() -> str | None:
            text = await admin.get(f"/api/v1/namespaces/{namespace}/pods/hello-env/log", container="app")
            return text if isinstance(text, str) and "hello-env app line 1" in text else None

        await eventually(logs, what="logs through the apiserver")

        # A change of the chart's ConfigMap reaches the running process: the Node shows it, no restart.
        configmap_path = f"/api/v1/namespaces/{release.namespace}/configmaps/{release.configmap}"
        original = (await admin.get(configmap_path))["data"]["config.yaml"]
        changed = original.replace('cpu: "7"', 'cpu: "9"')
        assert changed != original, original
        await admin.patch(configmap_path, {"data": {"config.yaml": changed}})
        try:

            async def capacity_nine() -> bool:
                node = await admin.get(f"/api/v1/nodes/{vn.name}")
                return bool(node["status"]["capacity"]["cpu"] == "9")

            await eventually(capacity_nine, what="the ConfigMap's new capacity on the Node")
        finally:
            await admin.patch(configmap_path, {"data": {"config.yaml": original}})
        log = vn.process.log()
        assert "forbidden" not in log.lower(), log
    finally:
        vn.process.stop()
        await delete_node(admin, vn.name)


async def test_a_missing_rule_is_a_clear_error_not_a_hang(
    release: Release,
    admin: Kube,
    cluster: Cluster,
    namespace: str,
    virtual_node: StartNode,
    tmp_path: pathlib.Path,
) -> None:
    """Without `patch pods/status` the pod is created in the provider but never reported Running, and
    the process says why (the 403 naming the resource) within seconds."""
    role = await admin.get(release.cluster_role_path)
    original = role["rules"]
    role["rules"] = [r for r in original if r["resources"] != ["pods/status"]]
    assert len(role["rules"]) == len(original) - 1
    await admin.request("PUT", release.cluster_role_path, body=role)
    kubeconfig = await serviceaccount_kubeconfig(admin, cluster, release, tmp_path / "chart-sa.kubeconfig")
    vn: VirtualNode | None = None
    try:
        vn = await virtual_node(kubeconfig=kubeconfig)
        process = vn.process
        await admin.create(
            f"/api/v1/namespaces/{namespace}/pods",
            {
                "metadata": {"name": "web"},
                "spec": {
                    "nodeName": vn.name,
                    "automountServiceAccountToken": False,
                    "containers": [{"name": "app", "image": "nginx:1.27"}],
                },
            },
        )

        async def clear_error() -> str | None:
            log = process.log()
            assert process.proc.poll() is None, f"the process exited instead of retrying:\n{log}"
            return next((x for x in log.splitlines() if 'cannot patch resource "pods/status"' in x), None)

        line = await eventually(clear_error, what="a log line naming the forbidden pods/status patch")
        assert (
            "403" in line and f"system:serviceaccount:{release.namespace}:{release.service_account}" in line
        )
        assert await pod_phase(admin, namespace, "web") == "Pending"
        assert process.proc.poll() is None  # it keeps the node alive and retries
    finally:
        role = await admin.get(release.cluster_role_path)
        role["rules"] = original
        await admin.request("PUT", release.cluster_role_path, body=role)
        if vn is not None:
            vn.process.stop()
            await delete_node(admin, vn.name)


if __name__ == "__main__":  # rewrite the chart's copy of the providers' config schemas
    path = CHART / "values.schema.json"
    path.write_text(json.dumps(with_provider_schemas(json.loads(path.read_text())), indent=2) + "\n")

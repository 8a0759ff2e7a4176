"""The Azure Batch provider's config (``--provider-config``), validated by :class:`AzureBatchConfig`.

No secret lives here: ``credential`` says where the credential comes from (azure-identity's sources,
or a shared key read from the environment variable ``shared_key_env``). ``examples/azurebatch-provider.yaml``
is a complete example. The SDK pins the data-plane api-version: ``azure-batch`` 15.1 speaks
``2025-06-01``, the version of the spec the local Batch service validates against.
"""

from __future__ import annotations

from typing import Annotated, Literal, Self

import pydantic

from providers.azurebatch import naming
from vk_operator.provider import Quantity

API_VERSION = "2025-06-01"

CredentialSource = Literal["default", "environment", "workload_identity", "managed_identity", "shared_key"]
BatchId = Annotated[str, pydantic.StringConstraints(pattern=naming.ID_RE.pattern)]


class _Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class NodeSize(_Model):
    """What one node of the pool offers to pods (its VM size's vCPUs, memory and GPUs)."""

    cpu: Quantity = pydantic.Field(description="vCPUs of one node, e.g. '6'.")
    memory: Quantity = pydantic.Field(description="Memory of one node, e.g. '112Gi'.")
    gpu: int = pydantic.Field(0, ge=0, le=64, description="NVIDIA GPUs of one node (nvidia.com/gpu).")


class CapacityConfig(_Model):
    """What the virtual node advertises.

    ``mode: pool`` (the default): the pool's current dedicated plus low-priority/spot nodes times
    one node's size, refreshed on every node status update, so the scheduler sees the pool shrink
    and grow; ``pods`` is the nodes times the pool's task slots per node. One node's size comes from
    ``node_size`` or, when not given, from the built-in table of common VM sizes (the Batch data
    plane names the VM size but not its cores, memory or GPUs); a VM size in neither fails start-up.
    ``mode: fixed``: ``fixed`` is advertised whatever the pool has.
    """

    mode: Literal["pool", "fixed"] = pydantic.Field(
        "pool", description="'pool': follow the pool's node count; 'fixed': advertise `fixed`."
    )
    node_size: NodeSize | None = pydantic.Field(
        None, description="One node's size; default: looked up by the pool's VM size."
    )
    count_low_priority: bool = pydantic.Field(
        True, description="Count low-priority/spot nodes (they can be preempted) in the capacity."
    )
    fixed: NodeSize = pydantic.Field(
        NodeSize(cpu="20", memory="100Gi", gpu=1), description="What `mode: fixed` advertises."
    )
    fixed_pods: int = pydantic.Field(20, ge=1, le=100000, description="Pods `mode: fixed` advertises.")


class StatusPolling(_Model):
    """The read budget for pod status: one paged ``list_tasks`` ($select) per poll, never more often."""

    calls_per_minute: int = pydantic.Field(
        60, ge=1, le=6000, description="At most this many list_tasks pages a minute, whatever the pod count."
    )


class AzureBatchConfig(_Model):
    """The Azure Batch provider's config. Unknown keys are errors."""

    account_endpoint: Annotated[str, pydantic.StringConstraints(pattern=r"^https?://[^\s/]+/?$")] = (
        pydantic.Field(
            description="The Batch account's endpoint, e.g. https://myaccount.westeurope.batch.azure.com "
            "(http:// only for the local Batch service)."
        )
    )
    pool_id: BatchId = pydantic.Field(description="The existing, active pool the pods run on.")
    job_id: BatchId | None = pydantic.Field(
        None,
        description="The Batch job of this node (created if absent, its metadata naming the node); "
        "default: derived from the node name ('vk-<node>').",
    )
    credential: CredentialSource = pydantic.Field(
        "default",
        description="Where the credential comes from: azure-identity's 'default' chain, 'environment', "
        "'workload_identity', 'managed_identity', or 'shared_key' (the account key in the environment "
        "variable `shared_key_env`).",
    )
    managed_identity_client_id: str | None = pydantic.Field(
        None, pattern=r"^[0-9a-fA-F-]{36}$", description="A user-assigned managed identity's client id."
    )
    account_name: Annotated[str, pydantic.StringConstraints(pattern=r"^[a-z0-9]{3,24}$")] | None = (
        pydantic.Field(
            None,
            description="The account name for shared-key signing; default: the endpoint's first label.",
        )
    )
    shared_key_env: Annotated[str, pydantic.StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] = (
        pydantic.Field(
            "AZURE_BATCH_ACCOUNT_KEY",
            description="The environment variable holding the account key (credential: shared_key).",
        )
    )
    capacity: CapacityConfig = pydantic.Field(
        CapacityConfig(), description="What the node advertises: by default, the pool's current nodes."
    )
    multi_container: Literal["refuse", "docker_wrapper"] = pydantic.Field(
        "refuse",
        description="Pods with several containers or init containers: 'refuse' fails them (permanent "
        "reason MultiContainerPodUnsupported); 'docker_wrapper' runs them as one task, a script that "
        "starts every container under the node's Docker with a shared network (the pool's start task "
        "must provide Docker and the NVIDIA container toolkit; the task runs as the pool's admin).",
    )
    secrets: Literal["refuse", "task_environment"] = pydantic.Field(
        "refuse",
        description="Secret env vars and secret volumes: Batch tasks have no secret settings, and "
        "anyone who can read the job reads a task's environment. 'refuse' fails such pods naming the "
        "field; 'task_environment' delivers them in the task's environment anyway.",
    )
    mount_service_account_token: bool = pydantic.Field(
        False,
        description="Deliver the projected service-account token volume (kube-api-access-*); by "
        "default it is left out: it is a secret and the cluster API is rarely reachable from Batch.",
    )
    max_task_retry_count: int = pydantic.Field(
        -1,
        ge=-1,
        le=100,
        description="Batch retries of a failed task for restartPolicy OnFailure/Always (-1: without limit, "
        "as Kubernetes restarts); restartPolicy Never gets none.",
    )
    retention: Annotated[str, pydantic.StringConstraints(pattern=r"^P(\d+D)?(T(\d+H)?(\d+M)?(\d+S)?)?$")] = (
        pydantic.Field("P1D", description="How long Batch keeps a finished task's files (ISO 8601 duration).")
    )
    status_poll: StatusPolling = pydantic.Field(
        StatusPolling(), description="The read budget for pod status."
    )
    node_ip_refresh_seconds: float = pydantic.Field(
        300.0, gt=0, le=86400, description="How long a Batch node's IP address (the pod IP) is cached."
    )

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.managed_identity_client_id and self.credential not in ("default", "managed_identity"):
            raise ValueError("managed_identity_client_id applies to credential default or managed_identity")
        return self

    def shared_key_account(self) -> str:
        if self.account_name:
            return self.account_name
        host = self.account_endpoint.split("://", 1)[1].strip("/")
        return host.split(".", 1)[0].split(":", 1)[0]

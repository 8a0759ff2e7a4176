"""The Fargate provider's config (``--provider-config``), validated by :class:`FargateConfig`.

No credentials live here: the AWS SDK reads them from its standard chain (environment variables,
an EKS IAM role for the ServiceAccount through ``AWS_WEB_IDENTITY_TOKEN_FILE``, the shared config
files, the instance or task role). ``examples/fargate-provider.yaml`` is a complete example.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Self

import pydantic

from providers.fargate import naming
from vk_operator.provider import Quantity

_REGION = r"^[a-z]{2}(-[a-z]+)+-\d+$"
_SUBNET = r"^subnet-[0-9a-f]{8,17}$"
_SECURITY_GROUP = r"^sg-[0-9a-f]{8,17}$"
_CLUSTER = r"^([A-Za-z0-9_-]+|arn:aws[a-z-]*:ecs:[a-z0-9-]+:[0-9]{12}:cluster/[A-Za-z0-9_-]+)$"
_ROLE_ARN = r"^arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9_+=,.@/-]+$"
_LOG_GROUP = r"^[.\-_/#A-Za-z0-9]+$"
_PLATFORM_VERSION = r"^(LATEST|\d+\.\d+\.\d+)$"


class _Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class StatusPolling(_Model):
    """How often task status is read from ECS (the bulk status of the SDK's BulkStatusProvider)."""

    calls_per_minute: int = pydantic.Field(
        120,
        ge=1,
        le=6000,
        description="At most this many ECS status calls (ListTasks pages and DescribeTasks batches "
        "of 100) in any minute, whatever the pod count. When a poll would exceed it, the statuses "
        "last read are reported instead.",
    )
    refresh_seconds: float = pydantic.Field(
        300.0,
        gt=0,
        le=24 * 3600,
        description="How long a RUNNING task may go without a DescribeTasks (for its health status); "
        "new tasks, stopping ones and stopped ones are described at once.",
    )


class RunTaskRate(_Model):
    """A client-side token bucket for RunTask (ECS throttles RunTask per account and region)."""

    per_second: float = pydantic.Field(
        10.0, gt=0, le=1000, description="Sustained RunTask calls a second this node makes at most."
    )
    burst: int = pydantic.Field(
        50, ge=1, le=10000, description="RunTask calls this node may make at once before the rate applies."
    )


class FileVolumes(_Model):
    """How configMap, secret, projected and downwardAPI volumes reach a task (Fargate has no such
    volumes): an init container the provider adds writes their files into task volumes before the
    pod's containers start. Non-secret file contents travel base64-encoded in its environment (in the
    task definition); secret ones in the pod's Secrets Manager entry (never in the task definition)."""

    init_image: str = pydantic.Field(
        min_length=1,
        description="The image of the file-writing init container: it needs sh, mkdir, chmod and "
        "base64 -d (busybox; on AWS e.g. public.ecr.aws/docker/library/busybox:stable).",
    )


class FargateConfig(_Model):
    """The Fargate provider's config. Unknown keys are errors."""

    region: Annotated[str, pydantic.StringConstraints(pattern=_REGION)] = pydantic.Field(
        description="The AWS region of the ECS cluster, the log group and the secrets (eu-west-1)."
    )
    cluster: Annotated[str, pydantic.StringConstraints(pattern=_CLUSTER)] = pydantic.Field(
        description="The ECS cluster (name or ARN) tasks run in; it must exist and be ACTIVE. "
        "One cluster per virtual node keeps status calls proportional to this node's pods."
    )
    subnets: list[Annotated[str, pydantic.StringConstraints(pattern=_SUBNET)]] = pydantic.Field(
        min_length=1,
        max_length=16,
        description="The VPC subnets of the tasks' network interfaces (awsvpc), at most 16.",
    )
    security_groups: list[Annotated[str, pydantic.StringConstraints(pattern=_SECURITY_GROUP)]] = (
        pydantic.Field(
            min_length=1, max_length=5, description="The security groups of the tasks' interfaces, at most 5."
        )
    )
    assign_public_ip: bool = pydantic.Field(
        False,
        description="Give every task a public IP (needed in a public subnet without a NAT gateway "
        "to pull images from the internet).",
    )
    platform_version: Annotated[str, pydantic.StringConstraints(pattern=_PLATFORM_VERSION)] = pydantic.Field(
        "LATEST", description="The Fargate platform version (LATEST or 1.4.0...)."
    )
    execution_role_arn: Annotated[str, pydantic.StringConstraints(pattern=_ROLE_ARN)] | None = pydantic.Field(
        None,
        description="The task execution role: ECS uses it to pull images, write the awslogs "
        "logs and read the pods' Secrets Manager entries. Required on AWS for awslogs and secrets.",
    )
    task_role_arn: Annotated[str, pydantic.StringConstraints(pattern=_ROLE_ARN)] | None = pydantic.Field(
        None, description="The IAM role the containers run as (their AWS credentials); none by default."
    )
    log_group: Annotated[str, pydantic.StringConstraints(pattern=_LOG_GROUP)] = pydantic.Field(
        "/virtual-kubelet/fargate",
        description="The CloudWatch Logs group of the containers' output (awslogs driver); "
        "`kubectl logs` reads it back. Created at start-up when missing.",
    )
    log_stream_prefix: Annotated[str, pydantic.StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = (
        pydantic.Field("vk", description="awslogs-stream-prefix: streams are PREFIX/CONTAINER/TASK-ID.")
    )
    secret_prefix: Annotated[str, pydantic.StringConstraints(pattern=r"^[A-Za-z0-9/_+=.@-]{1,128}$")] = (
        pydantic.Field(
            "vk-operator",
            description="Secrets Manager entries holding the values pods take from Kubernetes Secrets "
            "are named PREFIX/NODE/POD-UID (one per pod, deleted with it).",
        )
    )
    cpu: Quantity = pydantic.Field("20", description="The node's advertised CPU capacity (= allocatable).")
    memory: Quantity = pydantic.Field("40Gi", description="The node's advertised memory capacity.")
    pods: Quantity = pydantic.Field("200", description="The node's advertised pod capacity.")
    tags: dict[str, str] = pydantic.Field(
        default_factory=dict,
        description="Tags added to every task, task definition and secret, after the ownership tags "
        "(vk-operator.node, .namespace, .name, .uid), which they may not replace.",
    )
    file_volumes: FileVolumes | None = pydantic.Field(
        None,
        description="Mount configMap/secret/projected/downwardAPI volumes through an init container "
        "(see FileVolumes); without it a pod with such a volume fails, naming the volume.",
    )
    status_poll: StatusPolling = pydantic.Field(default_factory=StatusPolling)
    run_task_rate: RunTaskRate = pydantic.Field(default_factory=RunTaskRate)
    max_attempts: int = pydantic.Field(
        3,
        ge=1,
        le=10,
        description="botocore's attempts per call, the first included (standard retry mode: throttles "
        "and 5xx are retried until then; a throttle that remains holds back every call of the node).",
    )
    stop_timeout_seconds: float = pydantic.Field(
        120.0, gt=0, le=3600, description="How long delete_pod waits for a stopped task to reach STOPPED."
    )
    poll_interval_seconds: float = pydantic.Field(
        2.0, gt=0, le=60, description="Seconds between DescribeTasks while waiting for a task to stop."
    )
    endpoint_url: Annotated[str, pydantic.StringConstraints(pattern=r"^https?://[^\s/]+(/\S*)?$")] | None = (
        pydantic.Field(
            None,
            description="One endpoint for ECS, CloudWatch Logs and Secrets Manager (tests point it at "
            "a moto server); omit for AWS.",
        )
    )
    launch_type: Literal["FARGATE"] = "FARGATE"

    @pydantic.field_validator("tags")
    @classmethod
    def _tags(cls, tags: dict[str, str]) -> dict[str, str]:
        for key, value in tags.items():
            naming.check_tag(key, value)
            if naming.is_ownership_tag(key):
                raise ValueError(f"tag {key!r} is one of the provider's ownership tags")
        if len(tags) > naming.MAX_TAGS - len(naming.OWNERSHIP_TAGS):
            raise ValueError(f"at most {naming.MAX_TAGS - len(naming.OWNERSHIP_TAGS)} tags (ECS allows 50)")
        return tags

    @pydantic.model_validator(mode="after")
    def _distinct(self) -> Self:
        for field in ("subnets", "security_groups"):
            values = getattr(self, field)
            if len(set(values)) != len(values):
                raise ValueError(f"{field} lists an entry twice")
        return self

    @property
    def cluster_name(self) -> str:
        return re.sub(r"^.*:cluster/", "", self.cluster)

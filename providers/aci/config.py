"""The ACI provider's config (``--provider-config``), validated by :class:`AciConfig`.

No secrets live here: ``credential`` names where azure-identity finds them (the environment, a
workload identity, a managed identity), and ``managed_identity_client_id`` is an identifier, not a
credential. ``examples/aci-provider.yaml`` is a complete example.

**API version.** The SDK pins the ARM api-version: ``azure-mgmt-containerinstance`` 10.1 speaks
``2023-05-01`` (:data:`API_VERSION`), the version of the spec the local ARM server validates against.
It is not a config key: the SDK's models are generated for that version, so another one would send
bodies the models do not describe.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal, Self

import pydantic

from providers.aci import naming
from vk_operator.provider import Quantity, parse_quantity

API_VERSION = "2023-05-01"

CredentialSource = Literal["default", "environment", "workload_identity", "managed_identity"]
OsType = Literal["Linux", "Windows"]

# ARM: a resource group name is 1-90 letters, digits, '_', '(', ')', '-' and '.', not ending in '.'.
_RESOURCE_GROUP = re.compile(r"^[-\w.()]{0,89}[-\w()]$")
_SUBNET_ID = re.compile(
    r"^/subscriptions/[^/]+/resourceGroups/[^/]+/providers/Microsoft\.Network/virtualNetworks/[^/]+"
    r"/subnets/[^/]+$",
    re.IGNORECASE,
)
# A Kubernetes annotation key: an optional DNS-subdomain prefix and '/', then a name of at most 63.
_ANNOTATION_KEY = re.compile(
    r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
_DNS_OPTION = re.compile(r"^[A-Za-z0-9_-]+(:[A-Za-z0-9_.-]+)?$")
_SEARCH_DOMAIN = re.compile(
    r"^[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*$"
)

AnnotationKey = Annotated[str, pydantic.StringConstraints(pattern=_ANNOTATION_KEY.pattern, max_length=316)]
Seconds = Annotated[float, pydantic.Field(ge=0, le=24 * 3600)]


def _positive(text: str) -> str:
    if parse_quantity(text) <= 0:
        raise ValueError(f"{text!r} must be greater than zero")
    return text


PositiveQuantity = Annotated[Quantity, pydantic.AfterValidator(_positive)]


class _Model(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class DnsDefaults(_Model):
    """What the kubelet's ``--cluster-dns`` and ``--cluster-domain`` give a ``ClusterFirst`` pod.

    ``nameservers`` (the cluster DNS service) and ``search_domains`` and ``options`` are added to
    every ``ClusterFirst``/``ClusterFirstWithHostNet`` pod, before the pod's own ``dnsConfig``.
    ``cluster_domain`` adds the kubelet's per-namespace searches (``<ns>.svc.<domain>``,
    ``svc.<domain>``, ``<domain>``) in front of ``search_domains``; prefer it to listing
    ``default.svc.cluster.local``, which is right only for pods of namespace ``default``.
    Without nameservers, ``ClusterFirst`` pods fall back to ACI's resolver (the kubelet's
    ``MissingClusterDNS`` Warning).
    """

    nameservers: list[pydantic.IPvAnyAddress] = []
    search_domains: list[Annotated[str, pydantic.StringConstraints(pattern=_SEARCH_DOMAIN.pattern)]] = []
    options: list[Annotated[str, pydantic.StringConstraints(pattern=_DNS_OPTION.pattern)]] = []
    cluster_domain: Annotated[str, pydantic.StringConstraints(pattern=_SEARCH_DOMAIN.pattern)] | None = None


class StatusPolling(_Model):
    """The ARM read budget for pod status (the bulk status of the SDK issue).

    ``calls_per_minute`` caps every status read (list and GET calls) whatever the pod count: ARM
    throttles reads per subscription, shared with everything else using it. ``refresh_seconds`` is
    how long a steady group may go without a GET (a list has no instanceView, so restarts and exit
    codes need one) when the budget allows it; groups in transition are read first.
    """

    calls_per_minute: int = pydantic.Field(60, ge=1, le=12000)
    refresh_seconds: float = pydantic.Field(300.0, gt=0, le=24 * 3600)


class AciConfig(_Model):
    """The ACI provider's config. Unknown keys are errors."""

    subscription_id: Annotated[str, pydantic.StringConstraints(pattern=r"^[A-Za-z0-9-]+$")]
    resource_group: Annotated[str, pydantic.StringConstraints(pattern=_RESOURCE_GROUP.pattern)]
    # The Azure location (ARM's `location`) of the container groups: "westeurope".
    region: Annotated[str, pydantic.StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9 ]*$")]

    # Where azure-identity finds the credential: "default" (DefaultAzureCredential: environment,
    # workload identity, managed identity, in that order), or only one of them.
    credential: CredentialSource = "default"
    managed_identity_client_id: str | None = None  # a user-assigned identity's client id

    os_type: OsType = "Linux"

    # What the Node advertises (capacity = allocatable), as azure-aci's defaults.
    cpu: Quantity = "10000"
    memory: Quantity = "4Ti"
    pods: Quantity = "5000"
    gpu: Quantity | None = None  # nvidia.com/gpu

    # What a container gets when it requests nothing: ACI needs a request (azure-aci: 1 core, 1.5 GB).
    default_cpu: PositiveQuantity = "1"
    default_memory: PositiveQuantity = "1.5G"

    # The GPU SKU of `nvidia.com/gpu` containers unless `gpu_sku_annotation` names one (spec: K80,
    # P100, V100; ACI may add more).
    gpu_sku: Annotated[str, pydantic.StringConstraints(pattern=r"^[A-Za-z0-9]+$")] = "V100"

    # Container groups join these subnets (private IPs); without, a group with ports gets a public IP.
    subnet_id: Annotated[str, pydantic.StringConstraints(pattern=_SUBNET_ID.pattern)] | None = None
    subnet_ids: list[Annotated[str, pydantic.StringConstraints(pattern=_SUBNET_ID.pattern)]] = []

    dns: DnsDefaults = DnsDefaults()

    # Pod annotations the provider reads (azure-aci's names, so pods written for it keep working).
    dns_name_label_annotation: AnnotationKey = "virtualkubelet.io/dnsnamelabel"
    confidential_sku_annotation: AnnotationKey = "virtual-kubelet.io/container-sku"
    cce_policy_annotation: AnnotationKey = "virtual-kubelet.io/confidential-compute-cce-policy"
    gpu_sku_annotation: AnnotationKey = "virtual-kubelet.io/gpu-type"

    # Added to every container group, after the ownership tags (which they may not replace).
    tags: dict[str, str] = {}

    status_poll: StatusPolling = StatusPolling()

    # The ARM endpoint; None: the public cloud. Tests point it at the local ARM server.
    base_url: Annotated[str, pydantic.StringConstraints(pattern=r"^https?://[^\s/]+(/\S*)?$")] | None = None
    # Long-running operations (create, delete): seconds between polls when ARM gives no Retry-After.
    poll_interval_seconds: Seconds = 5.0

    @pydantic.field_validator("managed_identity_client_id")
    @classmethod
    def _client_id(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9a-fA-F-]{36}", value):
            raise ValueError("must be a client id (a GUID)")
        return value

    @pydantic.field_validator("tags")
    @classmethod
    def _tags(cls, tags: dict[str, str]) -> dict[str, str]:
        for key, value in tags.items():
            naming.check_tag(key, value)
            if naming.is_ownership_tag(key):
                raise ValueError(f"tag {key!r} is one of the provider's ownership tags")
        if len(tags) > naming.MAX_TAGS - len(naming.OWNERSHIP_TAGS):
            raise ValueError(f"at most {naming.MAX_TAGS - len(naming.OWNERSHIP_TAGS)} tags (ARM allows 50)")
        return tags

    @pydantic.model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.managed_identity_client_id and self.credential not in ("default", "managed_identity"):
            raise ValueError(
                f"managed_identity_client_id applies to credential default or managed_identity, "
                f"not {self.credential}"
            )
        if self.subnet_id and self.subnet_id in self.subnet_ids:
            raise ValueError("subnet_id is listed in subnet_ids too")
        return self

    @property
    def subnets(self) -> list[str]:
        """Every subnet the groups join: ``subnet_id`` first, then ``subnet_ids``."""
        return ([self.subnet_id] if self.subnet_id else []) + list(self.subnet_ids)

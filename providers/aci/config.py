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

    nameservers: list[pydantic.IPvAnyAddress] = pydantic.Field(
        [], description="The cluster DNS service's IPs (the kubelet's --cluster-dns), e.g. 10.0.0.10."
    )
    search_domains: list[Annotated[str, pydantic.StringConstraints(pattern=_SEARCH_DOMAIN.pattern)]] = (
        pydantic.Field([], description="Search domains added after the per-namespace ones.")
    )
    options: list[Annotated[str, pydantic.StringConstraints(pattern=_DNS_OPTION.pattern)]] = pydantic.Field(
        [], description="resolv.conf options, NAME or NAME:VALUE (ndots:5)."
    )
    cluster_domain: Annotated[str, pydantic.StringConstraints(pattern=_SEARCH_DOMAIN.pattern)] | None = (
        pydantic.Field(
            None,
            description="The kubelet's --cluster-domain (cluster.local): adds <ns>.svc.<domain>, "
            "svc.<domain> and <domain> to the searches.",
        )
    )


class StatusPolling(_Model):
    """The ARM read budget for pod status (the bulk status of the SDK issue).

    ``calls_per_minute`` caps every status read (list and GET calls) whatever the pod count: ARM
    throttles reads per subscription, shared with everything else using it. ``refresh_seconds`` is
    how long a steady group may go without a GET (a list has no instanceView, so restarts and exit
    codes need one) when the budget allows it; groups in transition are read first.
    """

    calls_per_minute: int = pydantic.Field(
        60,
        ge=1,
        le=12000,
        description="ARM reads a minute for pod status (lists and GETs, half each, spread over the "
        "minute), whatever the pod count. ARM allows a subscription about 12,000 reads an hour per "
        "region; leave room for everything else using it.",
    )
    refresh_seconds: float = pydantic.Field(
        300.0,
        gt=0,
        le=24 * 3600,
        description="How long a steady group may go without a GET (restarts and exit codes need one: "
        "a list has no instanceView) when the budget allows. Groups in transition and running Jobs "
        "are read first.",
    )


class AciConfig(_Model):
    """The ACI provider's config. Unknown keys are errors."""

    subscription_id: Annotated[str, pydantic.StringConstraints(pattern=r"^[A-Za-z0-9-]+$")] = pydantic.Field(
        description="The Azure subscription of the container groups (a GUID)."
    )
    resource_group: Annotated[str, pydantic.StringConstraints(pattern=_RESOURCE_GROUP.pattern)] = (
        pydantic.Field(
            description="The resource group the node's container groups live in (it must exist; the "
            "identity needs Contributor there, or a role with Microsoft.ContainerInstance/containerGroups/*)."
        )
    )
    region: Annotated[str, pydantic.StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9 ]*$")] = (
        pydantic.Field(description="The Azure location of the container groups (ARM's location): westeurope.")
    )

    credential: CredentialSource = pydantic.Field(
        "default",
        description="Where azure-identity finds the credential: default (DefaultAzureCredential: the "
        "environment, a workload identity, a managed identity, in that order), or only one of them. "
        "Credentials never live in this config.",
    )
    managed_identity_client_id: str | None = pydantic.Field(
        None, description="A user-assigned managed identity's client id (a GUID); not a secret."
    )

    os_type: OsType = pydantic.Field("Linux", description="The OS of the node's container groups.")

    cpu: Quantity = pydantic.Field(
        "10000", description="The Node's cpu capacity (capped by the region's quota)."
    )
    memory: Quantity = pydantic.Field("4Ti", description="The Node's memory capacity.")
    pods: Quantity = pydantic.Field(
        "5000", description="The Node's pod capacity (capped by the region's container group quota)."
    )
    gpu: Quantity | None = pydantic.Field(
        None, description="The Node's nvidia.com/gpu capacity; none by default."
    )

    default_cpu: PositiveQuantity = pydantic.Field(
        "1", description="The cpu request of a container that requests none (ACI needs one)."
    )
    default_memory: PositiveQuantity = pydantic.Field(
        "1.5G", description="The memory request of a container that requests none (ACI needs one)."
    )

    gpu_sku: Annotated[str, pydantic.StringConstraints(pattern=r"^[A-Za-z0-9]+$")] = pydantic.Field(
        "V100",
        description="The GPU SKU of nvidia.com/gpu containers unless the pod's gpu_sku_annotation names "
        "one (the spec has K80, P100, V100; ACI may accept others).",
    )

    subnet_id: Annotated[str, pydantic.StringConstraints(pattern=_SUBNET_ID.pattern)] | None = pydantic.Field(
        None,
        description="A subnet (resource id) the groups join with private IPs; it must be delegated to "
        "Microsoft.ContainerInstance/containerGroups, and the identity needs "
        "Microsoft.Network/virtualNetworks/subnets/join/action on it. Without subnets, a group with "
        "ports gets a public IP.",
    )
    subnet_ids: list[Annotated[str, pydantic.StringConstraints(pattern=_SUBNET_ID.pattern)]] = pydantic.Field(
        [], description="More subnets the groups join, after subnet_id."
    )

    dns: DnsDefaults = pydantic.Field(
        DnsDefaults(), description="What the kubelet's cluster DNS flags give ClusterFirst pods."
    )

    # Pod annotations the provider reads (azure-aci's names, so pods written for it keep working).
    dns_name_label_annotation: AnnotationKey = pydantic.Field(
        "virtualkubelet.io/dnsnamelabel",
        description="The pod annotation with the DNS name label of the group's public IP.",
    )
    confidential_sku_annotation: AnnotationKey = pydantic.Field(
        "virtual-kubelet.io/container-sku",
        description="The pod annotation with the group's SKU: Standard, Dedicated or Confidential.",
    )
    cce_policy_annotation: AnnotationKey = pydantic.Field(
        "virtual-kubelet.io/confidential-compute-cce-policy",
        description="The pod annotation with a confidential computing (CCE) policy: the group is "
        "Confidential.",
    )
    gpu_sku_annotation: AnnotationKey = pydantic.Field(
        "virtual-kubelet.io/gpu-type", description="The pod annotation with the GPU SKU (K80, P100, V100...)."
    )

    tags: dict[str, str] = pydantic.Field(
        {},
        description="Tags added to every container group, after the ownership tags (which they may "
        "not replace).",
    )

    status_poll: StatusPolling = pydantic.Field(
        StatusPolling(), description="The ARM read budget for pod status."
    )

    base_url: Annotated[str, pydantic.StringConstraints(pattern=r"^https?://[^\s/]+(/\S*)?$")] | None = (
        pydantic.Field(
            None,
            description="The ARM endpoint; none: the public cloud (a sovereign cloud's: its token scope is "
            "<base_url>/.default). A plain http:// URL is a local ARM server: no credential is used.",
        )
    )
    poll_interval_seconds: Seconds = pydantic.Field(
        5.0,
        description="Seconds between polls of a delete (and long-running operations) when ARM gives "
        "no Retry-After.",
    )

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

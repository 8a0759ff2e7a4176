"""The Azure credential and the ARM client of the provider.

``config.credential`` picks azure-identity's source: ``default`` (DefaultAzureCredential: the
environment, a workload identity, a managed identity, then developer tools), or one of
``environment`` (AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET or a certificate),
``workload_identity`` (AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_FEDERATED_TOKEN_FILE: AKS workload
identity) or ``managed_identity`` (``managed_identity_client_id`` for a user-assigned one).

A plain-``http://`` ``base_url`` is a local server (the tests' local ARM): no bearer token may go
over plain HTTP, so the client gets :class:`StaticCredential` and ``SansIOHTTPPolicy`` as its
authentication policy (DESIGN.md section 3). Any other ``base_url`` than the public cloud's gets
the token scope ``<base_url>/.default`` (sovereign clouds).
"""

from __future__ import annotations

import time
from typing import Any

from azure.core.credentials import AccessToken
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.pipeline.policies import SansIOHTTPPolicy
from azure.mgmt.containerinstance.aio import ContainerInstanceManagementClient

from providers.aci.config import AciConfig
from providers.aci.throttle import ArmRateGate, ArmRetryPolicy, RateLimitPolicy

PUBLIC_CLOUD = "https://management.azure.com"


class StaticCredential:
    """A credential for a local plain-HTTP ARM: a fixed token (never sent: see the module)."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("local-arm", int(time.time()) + 3600)

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> StaticCredential:
        return self

    async def __aexit__(self, *args: object) -> None:
        pass


def is_local(config: AciConfig) -> bool:
    return bool(config.base_url and config.base_url.lower().startswith("http://"))


def make_credential(config: AciConfig) -> AsyncTokenCredential:
    """The credential ``config`` names (ValueError when its source lacks settings)."""
    if is_local(config):
        return StaticCredential()
    from azure.identity.aio import (
        DefaultAzureCredential,
        EnvironmentCredential,
        ManagedIdentityCredential,
        WorkloadIdentityCredential,
    )

    client_id = config.managed_identity_client_id
    if config.credential == "environment":
        return EnvironmentCredential()
    if config.credential == "workload_identity":
        return WorkloadIdentityCredential()
    if config.credential == "managed_identity":
        return ManagedIdentityCredential(client_id=client_id) if client_id else ManagedIdentityCredential()
    if client_id:
        return DefaultAzureCredential(managed_identity_client_id=client_id)
    return DefaultAzureCredential()


def make_client(
    config: AciConfig, credential: AsyncTokenCredential, gate: ArmRateGate
) -> ContainerInstanceManagementClient:
    """The SDK client: ARM endpoint, our retry policy and the rate gate on every attempt."""
    kwargs: dict[str, Any] = {
        "retry_policy": ArmRetryPolicy(),
        "per_retry_policies": [RateLimitPolicy(gate)],
        "polling_interval": config.poll_interval_seconds,
    }
    base_url = (config.base_url or PUBLIC_CLOUD).rstrip("/")
    if is_local(config):
        kwargs["authentication_policy"] = SansIOHTTPPolicy()
    elif base_url.lower() != PUBLIC_CLOUD:
        kwargs["credential_scopes"] = [f"{base_url}/.default"]
    return ContainerInstanceManagementClient(credential, config.subscription_id, base_url=base_url, **kwargs)

"""Fixtures for tests against the local Batch service: spec validation is asserted at every teardown."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.batch.aio import BatchClient
from azure.core.credentials import AzureNamedKeyCredential

from providers.azurebatch import AzureBatchConfig
from providers.azurebatch.localbatch import DEFAULT_ACCOUNT, DEFAULT_KEY, LocalBatch, serve

POOL = "gpu-pool"
VM_SIZE = "standard_nc6s_v3"  # 6 vCPUs, 112Gi, 1 GPU a node (the provider's table)
KEY_ENV = "VK_TEST_BATCH_KEY"

# Fast simulated time for tests.
FAST: dict[str, Any] = {"schedule_seconds": 0.05, "prepare_seconds": 0.05, "delete_seconds": 0.05}


@pytest.fixture
def localbatch_options() -> dict[str, Any]:
    return dict(FAST)


@pytest.fixture
async def localbatch(localbatch_options: dict[str, Any]) -> AsyncIterator[LocalBatch]:
    """A running local Batch service with pool ``POOL`` (1 dedicated + 1 low-priority node).

    Fails the test at teardown if a request or response did not validate against the spec; a test
    that provokes failures on purpose takes them with ``take_validation_failures()``.
    """
    async with serve(**localbatch_options) as batch:
        batch.set_pool(POOL, vm_size=VM_SIZE, dedicated=1, low_priority=1)
        yield batch
        failures = batch.take_validation_failures()
    assert failures == [], "requests or responses did not validate against the spec:\n" + "\n".join(failures)


@pytest.fixture
def batch_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(KEY_ENV, DEFAULT_KEY)
    return DEFAULT_KEY


def provider_config(batch: LocalBatch, **extra: Any) -> AzureBatchConfig:
    assert batch.base_url is not None
    values: dict[str, Any] = {
        "account_endpoint": batch.base_url,
        "pool_id": POOL,
        "credential": "shared_key",
        "account_name": DEFAULT_ACCOUNT,
        "shared_key_env": KEY_ENV,
        "status_poll": {"calls_per_minute": 600},
        **extra,
    }
    return AzureBatchConfig.model_validate(values)


@pytest.fixture
async def batch_client(localbatch: LocalBatch) -> AsyncIterator[BatchClient]:
    """The real SDK, signing with the service's key."""
    assert localbatch.base_url is not None
    async with BatchClient(
        localbatch.base_url, AzureNamedKeyCredential(DEFAULT_ACCOUNT, DEFAULT_KEY)
    ) as client:
        yield client

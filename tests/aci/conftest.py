"""Fixtures for tests against the local ARM server: spec validation is asserted at every teardown."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.pipeline.policies import SansIOHTTPPolicy
from azure.mgmt.containerinstance.aio import ContainerInstanceManagementClient

from providers.aci.localarm import LocalArm, serve

SUBSCRIPTION = "00000000-0000-0000-0000-0000000000aa"
RESOURCE_GROUP = "vk-test"
LOCATION = "westus"

# Fast simulated time for tests; a test can change any knob on `localarm.knobs`.
FAST_KNOBS: dict[str, Any] = {
    "pull_seconds": 0.05,
    "delete_seconds": 0.05,
    "restart_backoff_seconds": 0.05,
    "restart_backoff_max_seconds": 0.2,
}


class FakeCredential:
    """Any object with an async get_token works; with SansIOHTTPPolicy it is never asked."""

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken("local-token", int(time.time()) + 3600)

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> FakeCredential:
        return self

    async def __aexit__(self, *args: object) -> None:
        pass


@pytest.fixture
def localarm_knobs() -> dict[str, Any]:
    """Override in a test module (or parametrize) to start the server with other knobs."""
    return dict(FAST_KNOBS)


@pytest.fixture
async def localarm(localarm_knobs: dict[str, Any]) -> AsyncIterator[LocalArm]:
    """A running local ARM server; fails the test at teardown if anything did not validate.

    A test that provokes validation failures on purpose takes them with
    ``localarm.take_validation_failures()`` and asserts on them.
    """
    async with serve(**localarm_knobs) as arm:
        yield arm
        failures = arm.take_validation_failures()
    assert failures == [], "requests or responses did not validate against the spec:\n" + "\n".join(failures)


def make_client(
    arm: LocalArm, subscription_id: str = SUBSCRIPTION, **kwargs: Any
) -> ContainerInstanceManagementClient:
    assert arm.base_url is not None
    return ContainerInstanceManagementClient(
        FakeCredential(),  # type: ignore[arg-type]
        subscription_id,
        base_url=arm.base_url,
        authentication_policy=SansIOHTTPPolicy(),
        polling_interval=0,
        **kwargs,
    )


@pytest.fixture
async def aci_client(localarm: LocalArm) -> AsyncIterator[ContainerInstanceManagementClient]:
    """The real SDK (credential, retry policy, LRO poller) pointed at ``localarm``."""
    async with make_client(localarm) as client:
        yield client

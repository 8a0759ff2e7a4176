"""The contract kit against the mock provider, in each of its status modes.

The "cloud" is a state file per test: an instance made for the same node after another was closed
(a restart) loads the same pods.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import ClassVar

from providers.mock import MockConfig, MockProvider
from vk_operator.provider import PreparedPod, Provider
from vk_operator.provider.testing import ProviderContract


class MockContract(ProviderContract):
    """The mock, started with a little latency so Pending -> Running is observed."""

    timeout = 10.0
    status_mode: ClassVar[str]

    async def make_provider(self, node_name: str) -> Provider:
        config = MockConfig.model_validate(
            {
                "state_file": str(self.tmp_path / "mock-cloud.json"),
                "start_latency_seconds": 0.3,
                "log_interval_seconds": 0.2,
                "status_mode": self.status_mode,
            }
        )
        provider: Provider = MockProvider(config, node_name)
        return provider

    def invalid_pod(self, node_name: str) -> PreparedPod | None:
        """The mock refuses a pod annotated ``fail-permanent``, as a backend refuses what it cannot run."""
        prepared = self.pod(node_name)
        pod = copy.deepcopy(prepared.pod)
        pod["metadata"]["annotations"]["mock.vk-operator.io/fail-permanent"] = "true"
        return dataclasses.replace(prepared, pod=pod)


class TestMockNotifyContract(MockContract):
    status_mode = "notify"


class TestMockPollContract(MockContract):
    status_mode = "poll"


class TestMockBulkContract(MockContract):
    status_mode = "bulk"

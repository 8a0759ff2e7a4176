"""The provider contract kit against FargateProvider on moto's server (a process of the suite's).

Every instance the kit makes reaches the same moto server and cluster, as restarted virtual
kubelets reach the same AWS account. Logs are checked in test_provider (the test writes the
CloudWatch events the awslogs driver would: nothing runs in moto's containers).
"""

from __future__ import annotations

import copy
import dataclasses
import pathlib
from typing import Any, ClassVar

import pytest

from providers.fargate import FargateConfig, FargateProvider
from vk_operator.provider import PreparedPod, Provider
from vk_operator.provider.testing import ProviderContract


class TestFargateContract(ProviderContract):
    timeout = 30.0
    poll_interval = 0.05
    check_logs: ClassVar[bool] = False  # nothing writes to CloudWatch in moto: see test_provider
    settings: dict[str, Any]

    # The kit's fixture uses tmp_path and deletes the test's pods at its teardown: extending
    # tmp_path with the cluster makes the cluster exist before and outlive that clean-up.
    @pytest.fixture
    def tmp_path(self, tmp_path: pathlib.Path, fargate_config: dict[str, Any]) -> pathlib.Path:
        self.settings = fargate_config
        return tmp_path

    async def make_provider(self, node_name: str) -> Provider:
        provider: Provider = FargateProvider(FargateConfig(**self.settings), node_name)
        return provider

    def invalid_pod(self, node_name: str) -> PreparedPod | None:
        """A pod larger than the largest Fargate task (16 vCPU / 120 GiB)."""
        prepared = self.pod(node_name)
        pod = copy.deepcopy(prepared.pod)
        pod["spec"]["containers"][0]["resources"] = {"requests": {"cpu": "32", "memory": "1Gi"}}
        return dataclasses.replace(prepared, pod=pod)

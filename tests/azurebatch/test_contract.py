"""The provider contract kit against AzureBatchProvider on the local Batch service (spec checks on).

Every instance the kit makes reaches the same service, as restarted virtual kubelets reach the same
account; the ``localbatch`` fixture fails the test at teardown if a request or response did not
validate against the spec.
"""

from __future__ import annotations

import copy
import dataclasses
import pathlib

import pytest

from providers.azurebatch import AzureBatchProvider
from providers.azurebatch.localbatch import LocalBatch
from vk_operator.provider import PreparedPod, Provider
from vk_operator.provider.testing import ProviderContract

from .conftest import provider_config


class TestAzureBatchContract(ProviderContract):
    timeout = 30.0
    poll_interval = 0.05
    batch: LocalBatch

    # The kit's session fixture uses tmp_path and deletes the test's pods at its teardown: extending
    # tmp_path with the service starts it before and stops it after that clean-up.
    @pytest.fixture
    def tmp_path(self, tmp_path: pathlib.Path, localbatch: LocalBatch, batch_key: str) -> pathlib.Path:
        self.batch = localbatch
        return tmp_path

    async def make_provider(self, node_name: str) -> Provider:
        provider = AzureBatchProvider(provider_config(self.batch), node_name)
        provider.follow_interval = 0.05
        return provider

    def pod(self, node_name: str) -> PreparedPod:
        """The kit's pod, writing a line to stdout as it starts (the service's LOCALBATCH_STDOUT)."""
        prepared = super().pod(node_name)
        pod = copy.deepcopy(prepared.pod)
        pod["spec"]["containers"][0]["env"] = [{"name": "LOCALBATCH_STDOUT", "value": "contract\n"}]
        return dataclasses.replace(prepared, pod=pod)

    def invalid_pod(self, node_name: str) -> PreparedPod | None:
        """Two containers: a container task runs one (multi_container: refuse)."""
        prepared = self.pod(node_name)
        pod = copy.deepcopy(prepared.pod)
        pod["spec"]["containers"].append({**pod["spec"]["containers"][0], "name": "sidecar"})
        return dataclasses.replace(prepared, pod=pod)

"""The provider contract kit against AciProvider on the local ARM server (spec validation on).

Every instance the kit makes reaches the same server, as restarted virtual kubelets reach the same
subscription; the ``localarm`` fixture fails the test at teardown if a request or response did not
validate against the spec.
"""

from __future__ import annotations

import copy
import dataclasses
import pathlib

import pytest

from providers.aci import AciConfig, AciProvider
from providers.aci.localarm import LocalArm
from vk_operator.provider import PreparedPod, Provider
from vk_operator.provider.testing import ProviderContract

from .conftest import LOCATION, RESOURCE_GROUP, SUBSCRIPTION


class TestAciContract(ProviderContract):
    timeout = 30.0
    poll_interval = 0.05
    arm: LocalArm

    # The kit's session fixture uses tmp_path and deletes the test's pods at its teardown: by
    # extending tmp_path with the server, the server starts before it and stops after that clean-up.
    @pytest.fixture
    def tmp_path(self, tmp_path: pathlib.Path, localarm: LocalArm) -> pathlib.Path:
        self.arm = localarm
        return tmp_path

    async def make_provider(self, node_name: str) -> Provider:
        config = AciConfig(
            subscription_id=SUBSCRIPTION,
            resource_group=RESOURCE_GROUP,
            region=LOCATION,
            base_url=self.arm.base_url,
            poll_interval_seconds=0.05,
        )
        provider: Provider = AciProvider(config, node_name)
        return provider

    def invalid_pod(self, node_name: str) -> PreparedPod | None:
        """An image ACI cannot pull: ARM refuses the PUT (400 InaccessibleImage)."""
        prepared = self.pod(node_name)
        pod = copy.deepcopy(prepared.pod)
        pod["spec"]["containers"][0]["image"] = "registry.example/inaccessible:1"
        return dataclasses.replace(prepared, pod=pod)

"""The contract kit against the skeleton provider (examples/skeleton), which authors copy."""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import pathlib
import sys
from types import ModuleType

from vk_operator.provider import PreparedPod, Provider
from vk_operator.provider.testing import ProviderContract

SKELETON = pathlib.Path(__file__).parents[2] / "examples" / "skeleton" / "skeleton_provider.py"


def _load() -> ModuleType:
    """Import the skeleton by path: it is an example, not a package."""
    spec = importlib.util.spec_from_file_location("skeleton_provider", SKELETON)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic resolves the config's annotations through it
    spec.loader.exec_module(module)
    return module


skeleton = _load()


class TestSkeletonContract(ProviderContract):
    timeout = 10.0

    async def make_provider(self, node_name: str) -> Provider:
        provider: Provider = skeleton.SkeletonProvider(skeleton.SkeletonConfig(start_seconds=0.2), node_name)
        return provider

    def invalid_pod(self, node_name: str) -> PreparedPod | None:
        prepared = self.pod(node_name)
        pod = copy.deepcopy(prepared.pod)
        pod["spec"]["hostNetwork"] = True
        return dataclasses.replace(prepared, pod=pod)

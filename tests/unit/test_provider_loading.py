"""Loading the provider named by --provider: that one only, with a clear error when it cannot be."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys

import pytest

from vk_operator import config
from vk_operator.config import ENTRY_POINT_GROUP, ConfigError, load_provider_factory

_PROBE = """
import json, sys
for blocked in ("azure", "aioboto3", "aiobotocore", "botocore", "boto3"):
    sys.modules[blocked] = None  # as without the optional extras: importing any of them fails
from vk_operator.config import load_provider_factory
factory = load_provider_factory("mock")
loaded = sorted(m for m in sys.modules if m.startswith("providers.") and sys.modules[m] is not None)
print(json.dumps({"factory": factory.__name__, "providers": loaded}))
"""


def test_the_mock_runs_without_the_cloud_extras_and_imports_no_other_provider() -> None:
    """Every installed provider used to be imported: +23 MB resident for the mock (the Azure and
    AWS SDKs), and without the extras an ImportError before anything started."""
    done = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["factory"] == "MockProvider"
    assert [m for m in result["providers"] if not m.startswith("providers.mock")] == []


def _entry_points(*points: importlib.metadata.EntryPoint) -> object:
    def entry_points(*, group: str) -> list[importlib.metadata.EntryPoint]:
        assert group == ENTRY_POINT_GROUP
        return list(points)

    return entry_points


def test_a_provider_whose_extra_is_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    broken = importlib.metadata.EntryPoint("cloud", "no_such_cloud_sdk_module:Provider", ENTRY_POINT_GROUP)
    monkeypatch.setattr(config.importlib.metadata, "entry_points", _entry_points(broken))
    with pytest.raises(ConfigError) as caught:
        load_provider_factory("cloud")
    message = str(caught.value)
    assert "provider 'cloud' cannot be imported" in message
    assert "no_such_cloud_sdk_module" in message and "vk-operator[azure]" in message


def test_an_unknown_provider_names_the_installed_ones_without_importing_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    broken = importlib.metadata.EntryPoint("cloud", "no_such_cloud_sdk_module:Provider", ENTRY_POINT_GROUP)
    mock = importlib.metadata.EntryPoint("mock", "providers.mock:MockProvider", ENTRY_POINT_GROUP)
    monkeypatch.setattr(config.importlib.metadata, "entry_points", _entry_points(broken, mock))
    with pytest.raises(ConfigError, match=r"unknown provider 'nope' \(installed: cloud, mock\)"):
        load_provider_factory("nope")

"""Fixtures of the Fargate tests: one moto server process per test module (see moto_fixtures)."""

from __future__ import annotations

import os
import pathlib
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from tests.fargate.moto_fixtures import CREDENTIALS, MotoProcess, prepare_account


@pytest.fixture(scope="module")
def aws_credentials() -> Iterator[None]:
    """Fake static credentials in the environment: the SDK's standard chain finds them first."""
    saved = {key: os.environ.get(key) for key in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
async def moto(tmp_path_factory: pytest.TempPathFactory, aws_credentials: None) -> AsyncIterator[MotoProcess]:
    log_dir: pathlib.Path = tmp_path_factory.mktemp("moto")
    server = MotoProcess(log_dir / "moto.log")
    try:
        await server.wait_listening()
        yield server
    finally:
        server.stop()


@pytest.fixture
async def fargate_config(moto: MotoProcess) -> dict[str, Any]:
    """A fresh cluster on the module's moto server, as provider config keys."""
    return await prepare_account(moto.url, f"vk-test-{uuid.uuid4().hex[:8]}")

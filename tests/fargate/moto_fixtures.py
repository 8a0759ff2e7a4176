"""A moto server process for the Fargate tests: started on a free loopback port, stopped after.

``MotoProcess`` runs ``python -m tests.fargate.motoserver`` (moto's own server plus the driver
routes described there), and ``prepare_account`` makes what a platform team has before installing
the provider: an ECS cluster, and the default VPC's subnet and security group (moto's EC2 has them;
RunTask checks the subnet exists).
"""

from __future__ import annotations

import asyncio
import json
import pathlib
import re
import signal
import subprocess
import sys
import time
from typing import Any

import aioboto3
import aiohttp
from botocore.config import Config

from tests.conftest import REPO

REGION = "eu-west-1"
_LISTENING = re.compile(r"moto listening on (http://\S+)")
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}


class MotoProcess:
    def __init__(self, log_path: pathlib.Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fargate.motoserver", "--port", "0"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
        )
        self.url = ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_listening(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while not self.url:
            if self.proc.poll() is not None:
                raise AssertionError(f"moto exited {self.proc.returncode}:\n{self.log()}")
            found = _LISTENING.search(self.log())
            if found:
                self.url = found.group(1)
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"moto not listening within {timeout}s:\n{self.log()}")
            await asyncio.sleep(0.05)
        return self.url

    async def drive(self, path: str, body: dict[str, Any] | None = None) -> Any:
        async with (
            aiohttp.ClientSession() as session,
            session.request(
                "POST" if body is not None else "GET", f"{self.url}/_driver/{path}", json=body
            ) as resp,
        ):
            text = await resp.text()
            assert resp.status == 200, f"/_driver/{path}: {resp.status} {text}"
            return json.loads(text)

    async def calls(self) -> dict[str, int]:
        return await self.drive("calls")  # type: ignore[no-any-return]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def session() -> aioboto3.Session:
    return aioboto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name=REGION)


CLIENT_CONFIG = Config(retries={"total_max_attempts": 1})  # one attempt: moto's 500s are seen


async def prepare_account(url: str, cluster: str) -> dict[str, Any]:
    """The cluster, and the provider config keys that name it and the network."""
    async with (
        session().client("ec2", endpoint_url=url, config=CLIENT_CONFIG) as ec2,
        session().client("ecs", endpoint_url=url, config=CLIENT_CONFIG) as ecs,
    ):
        subnets = (await ec2.describe_subnets())["Subnets"]
        groups = (await ec2.describe_security_groups())["SecurityGroups"]
        await ecs.create_cluster(clusterName=cluster)
    return {
        "region": REGION,
        "cluster": cluster,
        "subnets": [subnets[0]["SubnetId"]],
        "security_groups": [groups[0]["GroupId"]],
        "endpoint_url": url,
        "max_attempts": 1,
    }

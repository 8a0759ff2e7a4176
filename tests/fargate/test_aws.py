"""botocore failures as the core's errors, RunTask's token bucket and the status budget (pure)."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from providers.fargate.aws import CallBudget, TokenBucket, mapped
from vk_operator.provider import PermanentError, ThrottledError, TransientError


def client_error(code: str, status: int, message: str = "m") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "RunTask",
    )


@pytest.mark.parametrize(
    ("error", "kind", "reason"),
    [
        (client_error("ThrottlingException", 400, "Rate exceeded"), ThrottledError, "ProviderThrottled"),
        (client_error("TooManyRequestsException", 429), ThrottledError, "ProviderThrottled"),
        (client_error("ClientException", 400, "Rate exceeded."), ThrottledError, "ProviderThrottled"),
        (client_error("AccessDeniedException", 400), PermanentError, "AccessDenied"),
        (client_error("InvalidParameterException", 400), PermanentError, "FargateRefused"),
        (client_error("ServerException", 500), TransientError, "FargateUnavailable"),
        (EndpointConnectionError(endpoint_url="http://x"), TransientError, "FargateUnreachable"),
    ],
)
def test_errors_map(error: Exception, kind: type[Exception], reason: str) -> None:
    result = mapped(error, "RunTask")
    assert type(result) is kind
    assert result.reason == reason
    assert result.message.startswith("RunTask: ")


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> Any:
        self.slept.append(seconds)


async def test_token_bucket_lets_the_burst_through_then_spaces() -> None:
    clock = Clock()
    bucket = TokenBucket(per_second=10, burst=2, clock=clock, sleep=clock.sleep)
    for _ in range(4):
        await bucket.take()
    assert clock.slept == pytest.approx([0.1, 0.2])  # the 3rd and 4th wait their turn
    clock.now = 10.0
    await bucket.take()
    assert len(clock.slept) == 2  # refilled


def test_call_budget_is_a_sliding_minute() -> None:
    clock = Clock()
    budget = CallBudget(5, clock=clock)
    budget.spend(3)
    clock.now = 30
    budget.spend(2)
    assert budget.available() == 0
    clock.now = 60.5
    assert budget.available() == 3

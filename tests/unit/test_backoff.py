import pytest

from vk_operator.pods.backoff import Backoff


@pytest.mark.parametrize(
    ("attempt", "delay"), [(1, 0.5), (2, 1.0), (3, 2.0), (6, 16.0), (7, 30.0), (50, 30.0)]
)
def test_capped_exponential_backoff(attempt: int, delay: float) -> None:
    assert Backoff(initial=0.5, cap=30.0).delay(attempt) == delay

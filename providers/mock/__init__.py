"""The in-memory mock provider: the default, and the test and benchmark workhorse."""

from providers.mock.provider import MockConfig, MockProvider

__all__ = ["MockConfig", "MockProvider"]

"""The Azure Batch provider (entry point ``azurebatch``): pods as tasks on an existing Batch pool."""

from providers.azurebatch.config import AzureBatchConfig
from providers.azurebatch.provider import AzureBatchProvider

__all__ = ["AzureBatchConfig", "AzureBatchProvider"]

"""The Kubernetes API client layer: raw JSON requests over kubernetes-asyncio's transport."""

from vk_operator.kube.client import ApiError, Kube, RateLimiter, load_configuration

__all__ = ["ApiError", "Kube", "RateLimiter", "load_configuration"]

"""The AWS Fargate provider (entry point ``fargate``): one pod = one ECS task on Fargate.

``FargateProvider`` is the factory the core loads; ``FargateConfig`` its config model
(``examples/fargate-provider.yaml``). The tests run it against moto's server (``docs/fargate.md``).
"""

from providers.fargate.config import FargateConfig
from providers.fargate.provider import FargateProvider

__all__ = ["FargateConfig", "FargateProvider"]

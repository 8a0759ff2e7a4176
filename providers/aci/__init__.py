"""The Azure Container Instances provider (entry point ``aci``): one pod = one container group.

``AciProvider`` is the factory the core loads; ``AciConfig`` its config model
(``examples/aci-provider.yaml``). ``providers.aci.localarm`` is the local ARM server the tests
run it against.
"""

from providers.aci.config import AciConfig
from providers.aci.provider import AciProvider

__all__ = ["AciConfig", "AciProvider"]

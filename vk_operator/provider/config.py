"""Building blocks for providers' config models (pydantic)."""

from __future__ import annotations

from typing import Annotated

import pydantic

from vk_operator.domain.quantity import check_quantity

# A Kubernetes resource quantity ("8", "250m", "32Gi"), non-negative: a provider config with
# `cpu: lots` or `memory: -5Gi` is refused at load and at reload instead of making every Node status
# write fail with 422.
Quantity = Annotated[str, pydantic.AfterValidator(check_quantity)]

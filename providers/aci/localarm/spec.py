"""The ACI Swagger 2.0 document (api-version 2023-05-01) and its stored examples, compiled by
``providers.swagger`` (how Swagger differs from JSON Schema, and how each difference is treated),
which is where the compiler's names are imported from.
"""

from __future__ import annotations

from typing import Any

from providers import swagger

__all__ = ["API_VERSION", "SpecDocument", "example_names", "load_example", "load_spec"]

API_VERSION = "2023-05-01"


_SHIPPED = swagger.ShippedSpec(__package__ or __name__.rpartition(".")[0], "containerInstance.json")
load_spec = _SHIPPED.load_spec
example_names = _SHIPPED.example_names
load_example = _SHIPPED.load_example


class SpecDocument(swagger.SpecDocument):
    """The shipped document's operations (or ``spec``'s, a variant a test made of it)."""

    def __init__(self, spec: dict[str, Any] | None = None) -> None:
        super().__init__(spec if spec is not None else load_spec(), example_names())

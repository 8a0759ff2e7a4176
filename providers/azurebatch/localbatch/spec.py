"""The Batch data-plane Swagger 2.0 document (api-version 2025-06-01) and its stored examples,
compiled by ``providers.swagger`` (how Swagger differs from JSON Schema, and how each difference is
treated).
"""

from __future__ import annotations

import importlib.resources
import json
from functools import cache
from typing import Any

from providers import swagger
from providers.swagger import (
    FORMAT_CHECKER,
    READONLY_MARK,
    SECRET_MARK,
    Direction,
    Operation,
    Parameter,
    SchemaValidator,
    SpecError,
    coerce_parameter,
    compile_definition,
    compile_schema,
    split_path,
    strip_marked,
)

__all__ = [
    "API_VERSION",
    "FORMAT_CHECKER",
    "READONLY_MARK",
    "SECRET_MARK",
    "Direction",
    "Operation",
    "Parameter",
    "SchemaValidator",
    "SpecDocument",
    "SpecError",
    "coerce_parameter",
    "compile_definition",
    "compile_schema",
    "example_names",
    "load_example",
    "load_spec",
    "split_path",
    "strip_marked",
]

API_VERSION = "2025-06-01"


def _spec_dir() -> Any:
    return importlib.resources.files(__package__) / "spec"


@cache
def _load_spec_text() -> str:
    return str((_spec_dir() / "BatchService.json").read_text(encoding="utf-8"))


def load_spec() -> dict[str, Any]:
    """A fresh copy of the shipped Swagger document."""
    loaded: dict[str, Any] = json.loads(_load_spec_text())
    return loaded


def example_names() -> list[str]:
    """File names of the stored examples (``examples/*.json``)."""
    return sorted(p.name for p in (_spec_dir() / "examples").iterdir() if p.name.endswith(".json"))


def load_example(name: str) -> dict[str, Any]:
    """A stored example by file name, e.g. ``Pools_GetPool_Basic.json``."""
    if not name.endswith(".json"):
        name += ".json"
    loaded: dict[str, Any] = json.loads((_spec_dir() / "examples" / name).read_text(encoding="utf-8"))
    return loaded


class SpecDocument(swagger.SpecDocument):
    """The shipped document's operations (or ``spec``'s, a variant a test made of it)."""

    def __init__(self, spec: dict[str, Any] | None = None) -> None:
        super().__init__(spec if spec is not None else load_spec(), example_names())

"""Swagger 2.0 documents compiled to JSON Schema (draft 4) per direction, and their operation
tables: what the spec-checking local servers (``providers.aci.localarm``,
``providers.azurebatch.localbatch``) validate every request and response with. Nothing of ours is
imported: the servers stay stand-alone test backends.

Swagger 2.0 is close to JSON Schema draft 4 but not equal. How each difference is treated:

- ``$ref`` (all local, ``#/definitions/...``) is inlined; a definition that refers to itself through
  its own subtree (``CloudErrorBody.details``) stays a ``$ref`` into ``definitions``.
- ``allOf`` of object schemas (``ContainerGroup = Resource + ContainerGroupProperties``) is merged into
  one object schema, so that undeclared properties can be rejected (see below).
- ``readOnly``: in a request the service ignores read-only properties, so the property is accepted
  with any value and dropped from ``required``; the server strips it before storing. In a response it
  is validated like any other property.
- ``x-ms-secret``: Azure never returns secrets, so in responses such a property is not ``required``
  (``LogAnalytics.workspaceKey`` is required by the ACI spec yet absent from the spec's own example
  response). A secret the operation exists to return (``ContainerExecResponse.password``) is still
  validated by its type when present.
- ``x-ms-enum`` with ``modelAsString: true`` is an extensible enum: any string is accepted (a service
  may add words, so a client must accept them). Without it, or with ``modelAsString: false``
  (``ResourceIdentityType``), the enum is enforced.
- ``x-nullable: true`` adds ``null`` to the allowed types; without it ``null`` is not a value.
- ``additionalProperties``: where the spec declares it, it is honoured as written. Where an object
  schema declares ``properties`` and is silent about ``additionalProperties``, undeclared properties
  are rejected in both directions, as Azure's own validator (oav) does for models; a free-form
  ``{"type": "object"}`` without ``properties`` accepts any object.
- ``format``: ``int32``/``int64`` ranges, ``date-time`` (RFC 3339), ``date-time-rfc7231`` (HTTP dates,
  for headers), ``duration`` (ISO 8601, as .NET TimeSpan writes it) and ``uri`` are checked;
  ``double`` needs none.
- A ``{"type": "file"}`` response (Batch's task file content) is a byte stream: no JSON body is
  checked, only the declared headers.
- ``discriminator`` is not used by these documents; the compiler refuses one rather than ignore it.
"""

from __future__ import annotations

import copy
import datetime as dt
import importlib.resources
import json
import re
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

import jsonschema

Direction = Literal["request", "response"]
READONLY_MARK = "x-swagger-readonly"
SECRET_MARK = "x-swagger-secret"

_SCHEMA_KEYWORDS = (
    "type",
    "format",
    "enum",
    "pattern",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
)


# ---------------------------------------------------------------------------------------------
# Formats


def _is_rfc3339(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", value):
        return False
    text = value.upper().replace("Z", "+00:00")
    main, _, rest = text.partition(".")
    if rest:  # Python parses at most 6 fractional digits
        digits = re.match(r"\d+", rest)
        assert digits is not None
        text = main + "." + digits.group(0)[:6].ljust(6, "0") + rest[digits.end() :]
    try:
        dt.datetime.fromisoformat(text)
    except ValueError:
        return False
    return True


def _int_range(bits: int) -> Any:
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1

    def check(value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, int):
            return True
        return bool(low <= value <= high)

    return check


_RFC7231 = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{2} (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} "
    r"\d{2}:\d{2}:\d{2} GMT"
)
# ISO 8601 durations as the service writes them (.NET TimeSpan: up to 7 fractional digits).
_DURATION = re.compile(r"P(?!$)(\d+Y)?(\d+M)?(\d+W)?(\d+D)?(T(?=\d)(\d+H)?(\d+M)?(\d+(\.\d+)?S)?)?")


def _is_rfc7231(value: object) -> bool:
    return not isinstance(value, str) or _RFC7231.fullmatch(value) is not None


def _is_duration(value: object) -> bool:
    return not isinstance(value, str) or _DURATION.fullmatch(value) is not None


def _is_uri(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parts = urllib.parse.urlsplit(value)
    return bool(parts.scheme and (parts.netloc or parts.path)) and not any(c.isspace() for c in value)


def _format_checker() -> jsonschema.FormatChecker:
    checker = jsonschema.FormatChecker(formats=())
    checker.checks("date-time")(_is_rfc3339)
    checker.checks("date-time-rfc7231")(_is_rfc7231)
    checker.checks("duration")(_is_duration)
    checker.checks("uri")(_is_uri)
    checker.checks("int32")(_int_range(32))
    checker.checks("int64")(_int_range(64))
    return checker


FORMAT_CHECKER = _format_checker()


# ---------------------------------------------------------------------------------------------
# Compilation


class SpecError(Exception):
    """The document uses something this compiler does not translate."""


class _Compiler:
    def __init__(self, spec: Mapping[str, Any], direction: Direction) -> None:
        self.spec = spec
        self.definitions: Mapping[str, Any] = spec.get("definitions", {})
        self.direction = direction
        self.needed: set[str] = set()
        self.compiled_defs: dict[str, dict[str, Any]] = {}

    def _resolve(self, node: Mapping[str, Any]) -> tuple[str | None, Mapping[str, Any]]:
        ref = node.get("$ref")
        if ref is None:
            return None, node
        if not isinstance(ref, str) or not ref.startswith("#/definitions/"):
            raise SpecError(f"unsupported $ref {ref!r}")
        name = ref.removeprefix("#/definitions/")
        if name not in self.definitions:
            raise SpecError(f"unresolved $ref {ref!r}")
        return name, self.definitions[name]

    def is_readonly(self, node: Mapping[str, Any]) -> bool:
        if node.get("readOnly") is True:
            return True
        _, target = self._resolve(node)
        return target.get("readOnly") is True

    def is_secret(self, node: Mapping[str, Any]) -> bool:
        if node.get("x-ms-secret") is True:
            return True
        _, target = self._resolve(node)
        return target.get("x-ms-secret") is True

    def top(self, node: Mapping[str, Any]) -> dict[str, Any]:
        schema = self.compile(node, ())
        while self.needed - set(self.compiled_defs):
            for name in sorted(self.needed - set(self.compiled_defs)):
                self.compiled_defs[name] = {}  # placeholder against re-entry
                self.compiled_defs[name] = self.compile(self.definitions[name], (name,))
        if self.compiled_defs:
            schema = {**schema, "definitions": dict(self.compiled_defs)}
        return schema

    def compile(self, node: Mapping[str, Any], stack: tuple[str, ...]) -> dict[str, Any]:
        name, target = self._resolve(node)
        if name is not None:
            if name in stack:
                self.needed.add(name)
                return {"$ref": f"#/definitions/{name}"}
            return self.compile(target, (*stack, name))
        if "discriminator" in node:
            raise SpecError("discriminator is not supported (this document does not use it)")
        out: dict[str, Any] = {k: copy.deepcopy(node[k]) for k in _SCHEMA_KEYWORDS if k in node}
        enum_ext = node.get("x-ms-enum")
        if "enum" in out and isinstance(enum_ext, Mapping) and enum_ext.get("modelAsString") is True:
            del out["enum"]  # extensible enum: any string
        if "items" in node:
            out["items"] = self.compile(node["items"], stack)
        if "allOf" in node:
            parts = [self.compile(part, stack) for part in node["allOf"]]
            own = {k: v for k, v in node.items() if k != "allOf"}
            parts.append(self._object(own, stack))
            out = self._merge(out, parts)
        elif "properties" in node or "additionalProperties" in node:
            out.update(self._object(node, stack))
        if node.get("x-nullable") is True and "type" in out:
            types = out["type"] if isinstance(out["type"], list) else [out["type"]]
            out["type"] = [*types, "null"]
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        return out

    def _object(self, node: Mapping[str, Any], stack: tuple[str, ...]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if "properties" not in node and "additionalProperties" not in node:
            return out
        out["type"] = node.get("type", "object")
        required = [r for r in node.get("required", [])]
        props: dict[str, Any] = {}
        for prop_name, prop in node.get("properties", {}).items():
            readonly = self.is_readonly(prop)
            secret = self.is_secret(prop)
            if self.direction == "request" and readonly:
                props[prop_name] = {READONLY_MARK: True}
                required = [r for r in required if r != prop_name]
                continue
            compiled = self.compile(prop, stack)
            if secret:
                compiled = {**compiled, SECRET_MARK: True}
                if self.direction == "response":
                    required = [r for r in required if r != prop_name]
            if readonly:
                compiled = {**compiled, READONLY_MARK: True}
            props[prop_name] = compiled
        if "properties" in node:
            out["properties"] = props
        if required:
            out["required"] = required
        if "additionalProperties" in node:
            extra = node["additionalProperties"]
            out["additionalProperties"] = extra if isinstance(extra, bool) else self.compile(extra, stack)
        elif "properties" in node:
            out["additionalProperties"] = False
        return out

    @staticmethod
    def _merge(base: dict[str, Any], parts: list[dict[str, Any]]) -> dict[str, Any]:
        merged: dict[str, Any] = {**base, "type": "object"}
        props: dict[str, Any] = {}
        required: list[str] = []
        extra: Any = None
        declared_extra = False
        for part in parts:
            if "$ref" in part:
                raise SpecError("allOf over a recursive definition is not supported")
            if part.get("type", "object") != "object":
                raise SpecError("allOf of non-object schemas is not supported")
            for prop_name, prop in part.get("properties", {}).items():
                props[prop_name] = {"allOf": [props[prop_name], prop]} if prop_name in props else prop
            required += [r for r in part.get("required", []) if r not in required]
            if "additionalProperties" in part and part["additionalProperties"] is not False:
                extra, declared_extra = part["additionalProperties"], True
        merged["properties"] = props
        if required:
            merged["required"] = required
        merged["additionalProperties"] = extra if declared_extra else False
        return merged


def compile_schema(spec: Mapping[str, Any], node: Mapping[str, Any], direction: Direction) -> dict[str, Any]:
    """``node`` (any Swagger schema of ``spec``) as a self-contained draft-4 JSON Schema."""
    return _Compiler(spec, direction).top(node)


def compile_definition(spec: Mapping[str, Any], name: str, direction: Direction) -> dict[str, Any]:
    return compile_schema(spec, {"$ref": f"#/definitions/{name}"}, direction)


# ---------------------------------------------------------------------------------------------
# Validation


def _error_text(error: jsonschema.ValidationError) -> str:
    where = "/".join(str(p) for p in error.absolute_path) or "<root>"
    message = error.message
    if len(message) > 300:
        message = message[:297] + "..."
    return f"{where}: {message}"


@dataclass
class SchemaValidator:
    schema: dict[str, Any]
    _validator: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        jsonschema.Draft4Validator.check_schema(self.schema)
        self._validator = jsonschema.Draft4Validator(self.schema, format_checker=FORMAT_CHECKER)

    def errors(self, instance: Any) -> list[str]:
        found = sorted(self._validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))
        return [_error_text(e) for e in found]


def strip_marked(instance: Any, schema: Mapping[str, Any], mark: str) -> Any:
    """A copy of ``instance`` without the properties whose compiled schema carries ``mark``.

    Walks ``properties``, ``additionalProperties``, ``items`` and ``$ref`` into ``definitions``.
    """
    definitions: Mapping[str, Any] = schema.get("definitions", {})

    def walk(value: Any, node: Mapping[str, Any]) -> Any:
        while "$ref" in node:
            node = definitions[node["$ref"].removeprefix("#/definitions/")]
        if "allOf" in node:  # only produced for a property declared in two allOf branches
            for part in node["allOf"]:
                value = walk(value, part)
            return value
        if isinstance(value, dict):
            props: Mapping[str, Any] = node.get("properties", {})
            extra = node.get("additionalProperties")
            out: dict[str, Any] = {}
            for key, item in value.items():
                sub = props.get(key)
                if sub is None and isinstance(extra, Mapping):
                    sub = extra
                if sub is not None and sub.get(mark) is True:
                    continue
                out[key] = walk(item, sub) if sub is not None else copy.deepcopy(item)
            return out
        if isinstance(value, list) and isinstance(node.get("items"), Mapping):
            return [walk(item, node["items"]) for item in value]
        return copy.deepcopy(value)

    return walk(instance, schema)


# ---------------------------------------------------------------------------------------------
# Operations


@dataclass(frozen=True)
class Parameter:
    name: str
    location: str  # path | query | header | body
    required: bool
    validator: SchemaValidator
    swagger_type: str | None


@dataclass
class Operation:
    operation_id: str
    method: str
    template: str
    segments: tuple[str, ...]
    parameters: tuple[Parameter, ...]
    body: Parameter | None
    responses: dict[str, SchemaValidator | None]
    request_body_schema: dict[str, Any] | None
    pageable: bool
    long_running: bool
    in_spec: bool = True
    examples: tuple[str, ...] = ()
    # Statuses whose body is a byte stream (``{"type": "file"}``), not JSON.
    binary: frozenset[str] = frozenset()
    # Per status: the declared response headers (name -> validator of its value).
    headers: dict[str, dict[str, SchemaValidator]] = field(default_factory=dict)

    def match(self, segments: list[str]) -> dict[str, str] | None:
        if len(segments) != len(self.segments):
            return None
        values: dict[str, str] = {}
        for want, got in zip(self.segments, segments, strict=True):
            if want.startswith("{") and want.endswith("}"):
                if got == "":
                    return None
                values[want[1:-1]] = got
            elif want.lower() != got.lower():  # literal segments are case-insensitive
                return None
        return values

    def response_validator(self, status: int) -> tuple[bool, SchemaValidator | None]:
        """(declared, validator). A 2xx must be declared explicitly; an error may use ``default``."""
        key = str(status)
        if key in self.responses:
            return True, self.responses[key]
        if status >= 300 and "default" in self.responses:
            return True, self.responses["default"]
        return False, None


def split_path(path: str) -> list[str]:
    return [urllib.parse.unquote(s) for s in path.strip("/").split("/")]


def _parameter_schema(param: Mapping[str, Any]) -> dict[str, Any]:
    return {k: copy.deepcopy(param[k]) for k in (*_SCHEMA_KEYWORDS, "items") if k in param}


class SpecDocument:
    """The compiled operations of one Swagger document (``stored_examples``: the file names of the
    examples shipped with it, which ``iter_examples`` pairs with their operations)."""

    def __init__(self, spec: Mapping[str, Any], stored_examples: Iterable[str] = ()) -> None:
        self.spec: Mapping[str, Any] = spec
        self.stored_examples = frozenset(stored_examples)
        self.api_version: str = self.spec["info"]["version"]
        self.operations: list[Operation] = []
        self.by_id: dict[str, Operation] = {}
        self._validators: dict[tuple[str, Direction], SchemaValidator] = {}
        shared = self.spec.get("parameters", {})
        for template, item in self.spec["paths"].items():
            common = item.get("parameters", [])
            for method, op in item.items():
                if method == "parameters":
                    continue
                params = [self._deref_param(p, shared) for p in [*common, *op.get("parameters", [])]]
                self.add(self._operation(template, method.upper(), op, params))

    @staticmethod
    def _deref_param(param: Mapping[str, Any], shared: Mapping[str, Any]) -> Mapping[str, Any]:
        ref = param.get("$ref")
        if ref is None:
            return param
        resolved: Mapping[str, Any] = shared[ref.removeprefix("#/parameters/")]
        return resolved

    def add(self, operation: Operation) -> None:
        self.operations.append(operation)
        self.by_id[operation.operation_id] = operation

    def validator_for(self, node: Mapping[str, Any], direction: Direction) -> SchemaValidator:
        key = (json.dumps(node, sort_keys=True), direction)
        if key not in self._validators:
            self._validators[key] = SchemaValidator(compile_schema(self.spec, node, direction))
        return self._validators[key]

    def _operation(
        self, template: str, method: str, op: Mapping[str, Any], params: list[Mapping[str, Any]]
    ) -> Operation:
        parameters: list[Parameter] = []
        body: Parameter | None = None
        body_schema: dict[str, Any] | None = None
        for p in params:
            if p["in"] == "body":
                validator = self.validator_for(p["schema"], "request")
                body = Parameter(p["name"], "body", bool(p.get("required", False)), validator, None)
                body_schema = validator.schema
            else:
                schema = _parameter_schema(p)
                parameters.append(
                    Parameter(
                        p["name"],
                        p["in"],
                        bool(p.get("required", False)),
                        SchemaValidator(schema),
                        p.get("type"),
                    )
                )
        responses: dict[str, SchemaValidator | None] = {}
        binary: set[str] = set()
        headers: dict[str, dict[str, SchemaValidator]] = {}
        for status, response in op["responses"].items():
            schema = response.get("schema")
            if schema == {"type": "file"}:
                binary.add(status)
                responses[status] = None
            else:
                responses[status] = self.validator_for(schema, "response") if schema is not None else None
            headers[status] = {
                name.lower(): SchemaValidator(_parameter_schema(declared))
                for name, declared in response.get("headers", {}).items()
            }
        examples = tuple(
            str(v["$ref"]).removeprefix("./examples/") for v in op.get("x-ms-examples", {}).values()
        )
        return Operation(
            operation_id=op["operationId"],
            method=method,
            template=template,
            segments=tuple(template.strip("/").split("/")),
            parameters=tuple(parameters),
            body=body,
            responses=responses,
            request_body_schema=body_schema,
            pageable="x-ms-pageable" in op,
            long_running=bool(op.get("x-ms-long-running-operation", False)),
            examples=examples,
            binary=frozenset(binary),
            headers=headers,
        )

    def match(self, method: str, path: str) -> tuple[Operation | None, dict[str, str], bool]:
        """(operation, path values, path known). ``path known`` with no operation means a 405."""
        segments = split_path(path)
        known = False
        for op in self.operations:
            values = op.match(segments)
            if values is None:
                continue
            known = True
            if op.method == method:
                return op, values, True
        return None, {}, known

    def iter_examples(self) -> Iterator[tuple[Operation, str]]:
        for op in self.operations:
            for name in op.examples:
                if name in self.stored_examples:
                    yield op, name


def coerce_parameter(param: Parameter, raw: str) -> Any:
    """A query/path/header string as the JSON value its Swagger type describes (or the string)."""
    if param.swagger_type == "integer" and re.fullmatch(r"[+-]?\d+", raw):
        return int(raw)
    if param.swagger_type == "number":
        try:
            return float(raw)
        except ValueError:
            return raw
    if param.swagger_type == "array":  # collectionFormat csv, the only one this document uses
        return [item.strip() for item in raw.split(",")] if raw else []
    if param.swagger_type == "boolean" and raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    return raw


class ShippedSpec:
    """A Swagger document shipped in a package's ``spec/`` directory, with its ``examples/``."""

    def __init__(self, package: str, filename: str) -> None:
        self._dir = importlib.resources.files(package) / "spec"
        self._filename = filename

    @cache  # noqa: B019 (one per server module, alive for the process anyway)
    def _text(self) -> str:
        return str((self._dir / self._filename).read_text(encoding="utf-8"))

    def load_spec(self) -> dict[str, Any]:
        """A fresh copy of the shipped Swagger document."""
        loaded: dict[str, Any] = json.loads(self._text())
        return loaded

    def example_names(self) -> list[str]:
        """File names of the stored examples (``examples/*.json``)."""
        return sorted(p.name for p in (self._dir / "examples").iterdir() if p.name.endswith(".json"))

    def load_example(self, name: str) -> dict[str, Any]:
        """A stored example by file name (``.json`` may be left out)."""
        if not name.endswith(".json"):
            name += ".json"
        loaded: dict[str, Any] = json.loads((self._dir / "examples" / name).read_text(encoding="utf-8"))
        return loaded

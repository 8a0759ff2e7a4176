"""The local ARM server for Microsoft.ContainerInstance: state, ARM behaviour, spec checks, HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
import re
import secrets
import time
import traceback
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from aiohttp import web
from multidict import MultiMapping

from providers.swagger import (
    READONLY_MARK,
    SECRET_MARK,
    Operation,
    Parameter,
    SchemaValidator,
    coerce_parameter,
    compile_definition,
    compile_schema,
    split_path,
    strip_marked,
)

from .knobs import Knobs
from .simulation import (
    Clock,
    ContainerDef,
    Epoch,
    cores_for_quota,
    iso,
    render_logs,
    total_cpu,
)
from .spec import SpecDocument, load_example
from .throttle import Throttler

log = logging.getLogger(__name__)

PROVIDER = "Microsoft.ContainerInstance"
GROUP_TYPE = f"{PROVIDER}/containerGroups"
NAME_RE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
API_VERSION_RE = re.compile(r"\d{4}-\d{2}-\d{2}(-preview)?")
LOCAL_PREFIX = "/_localarm/"


@cache
def default_spec() -> SpecDocument:
    """The shipped document, compiled once per process (compiling takes a moment)."""
    return SpecDocument()


# ---------------------------------------------------------------------------------------------
# Responses and errors


@dataclass
class ArmResponse:
    status: int
    body: Any = None  # JSON value; None: no body
    headers: dict[str, str] = field(default_factory=dict)


def error_body(code: str, message: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if details:
        error["details"] = details
    return {"error": error}


class ArmError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.headers = dict(headers or {})

    def response(self) -> ArmResponse:
        return ArmResponse(self.status, error_body(self.code, self.message), dict(self.headers))


@dataclass
class Fault:
    operation_id: str
    status: int
    code: str
    message: str
    times: int
    headers: dict[str, str]


# ---------------------------------------------------------------------------------------------
# State


@dataclass
class Group:
    subscription: str
    resource_group: str
    name: str
    location: str
    body: dict[str, Any]  # the PUT body as stored: read-only properties removed, secrets kept
    created_at: float
    epoch: Epoch | None
    ip: str | None
    static: dict[str, Any] | None = None  # seeded from an example: answered as stored
    deleting_at: float | None = None
    delete_operation: str | None = None

    @property
    def id(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/{GROUP_TYPE}/{self.name}"
        )

    @property
    def key(self) -> tuple[str, str, str]:
        return group_key(self.subscription, self.resource_group, self.name)

    def container_names(self) -> list[str]:
        source = self.static if self.static is not None else self.body
        props = source.get("properties", {})
        return [str(c["name"]) for c in [*props.get("containers", []), *props.get("initContainers", [])]]

    def cpu(self) -> float:
        if self.static is not None:
            return sum(
                float(c.get("properties", {}).get("resources", {}).get("requests", {}).get("cpu", 0))
                for c in self.static.get("properties", {}).get("containers", [])
            )
        return total_cpu([rt.definition for rt in self.epoch.apps]) if self.epoch is not None else 0.0

    def stopped(self) -> bool:
        return self.epoch is not None and self.epoch.stopped_at is not None


def group_key(subscription: str, resource_group: str, name: str) -> tuple[str, str, str]:
    return (subscription.lower(), resource_group.lower(), name.lower())


@dataclass
class AsyncOperation:
    id: str
    kind: str  # create | update | start | delete
    subscription: str
    resource_group: str
    location: str
    key: tuple[str, str, str]
    started_at: float
    epoch: Epoch | None = None
    ended_at: float | None = None


@dataclass
class ExecSession:
    id: str
    kind: str  # exec | attach
    password: str
    key: tuple[str, str, str]
    container: str
    command: str
    terminal: tuple[int, int] | None
    created: float
    used: bool = False


def normalize_location(location: str) -> str:
    return location.replace(" ", "").lower()


# The ARM async-operation status resource (Azure-AsyncOperation): not part of this document.
# Shaped after ARM's common OperationStatusResult; the error reuses the spec's CloudErrorBody.
_OPERATION_STATUS = {
    "type": "object",
    "required": ["status"],
    "properties": {
        "id": {"type": "string"},
        "name": {"type": "string"},
        "status": {"type": "string", "enum": ["InProgress", "Succeeded", "Failed", "Canceled"]},
        "startTime": {"type": "string", "format": "date-time"},
        "endTime": {"type": "string", "format": "date-time"},
        "percentComplete": {"type": "number", "minimum": 0, "maximum": 100},
        "error": {"$ref": "#/definitions/CloudErrorBody"},
    },
}


def _local_operations(doc: SpecDocument) -> list[Operation]:
    cloud_error = doc.validator_for({"$ref": "#/definitions/CloudError"}, "response")
    status_schema = SchemaValidator(compile_schema(doc.spec, _OPERATION_STATUS, "response"))

    def string(name: str, location: str = "path") -> Parameter:
        return Parameter(name, location, True, SchemaValidator({"type": "string"}), "string")

    params = (
        string("subscriptionId"),
        string("resourceGroupName"),
        string("location"),
        string("operationId"),
        string("api-version", "query"),
    )
    base = "/subscriptions/{subscriptionId}/resourceGroups/{resourceGroupName}/providers/" + PROVIDER
    out = []
    for op_id, leaf, responses in (
        ("LocalArm_GetOperationStatus", "operations", {"200": status_schema, "default": cloud_error}),
        (
            "LocalArm_GetOperationResult",
            "operationResults",
            {"202": None, "204": None, "default": cloud_error},
        ),
    ):
        template = f"{base}/locations/{{location}}/{leaf}/{{operationId}}"
        out.append(
            Operation(
                operation_id=op_id,
                method="GET",
                template=template,
                segments=tuple(template.strip("/").split("/")),
                parameters=params,
                body=None,
                responses=dict(responses),
                request_body_schema=None,
                pageable=False,
                long_running=False,
                in_spec=False,
            )
        )
    return out


# ---------------------------------------------------------------------------------------------
# The server


class LocalArm:
    """State, knobs and request handling of one local ARM endpoint.

    ``validation_failures`` lists every request that did not validate against the spec and every
    response the server produced that did not (a server bug); tests assert it is empty.
    """

    def __init__(self, knobs: Knobs | None = None, *, spec: SpecDocument | None = None, **knob_values: Any):
        self.knobs = knobs or Knobs()
        self.knobs.update(**knob_values)
        self.spec = spec or default_spec()
        self.local_operations = _local_operations(self.spec)
        self.clock = Clock()
        self.throttler = Throttler()
        self.groups: dict[tuple[str, str, str], Group] = {}
        self.operations: dict[str, AsyncOperation] = {}
        self.sessions: dict[str, ExecSession] = {}
        self.validation_failures: list[str] = []
        self.calls: Counter[str] = Counter()  # "<operationId> <status>"
        self.recent: deque[tuple[float, str, str, int]] = deque(maxlen=10000)  # (time, method, path, status)
        self.base_url: str | None = None
        self.faults: list[Fault] = []
        self.websockets: set[web.WebSocketResponse] = set()
        self._ip_counter = 0
        self._deleting: set[tuple[str, str, str]] = set()
        cg_request = compile_definition(self.spec.spec, "ContainerGroup", "request")
        self._group_request_schema = cg_request
        self._cloud_error = self.spec.validator_for({"$ref": "#/definitions/CloudError"}, "response")
        self._handlers: dict[str, Callable[[Request], Awaitable[ArmResponse]]] = {
            "ContainerGroups_List": self.list_groups,
            "ContainerGroups_ListByResourceGroup": self.list_groups,
            "ContainerGroups_Get": self.get_group,
            "ContainerGroups_CreateOrUpdate": self.put_group,
            "ContainerGroups_Update": self.patch_group,
            "ContainerGroups_Delete": self.delete_group,
            "ContainerGroups_Restart": self.restart_group,
            "ContainerGroups_Stop": self.stop_group,
            "ContainerGroups_Start": self.start_group,
            "ContainerGroups_GetOutboundNetworkDependenciesEndpoints": self.outbound_dependencies,
            "Operations_List": self.list_operations,
            "Location_ListUsage": self.list_usage,
            "Location_ListCachedImages": self.list_cached_images,
            "Location_ListCapabilities": self.list_capabilities,
            "Containers_ListLogs": self.list_logs,
            "Containers_ExecuteCommand": self.execute_command,
            "Containers_Attach": self.attach,
            "SubnetServiceAssociationLink_Delete": self.delete_service_association_link,
            "LocalArm_GetOperationStatus": self.get_operation_status,
            "LocalArm_GetOperationResult": self.get_operation_result,
        }

    # --- public helpers for tests ----------------------------------------------------------

    def take_validation_failures(self) -> list[str]:
        """The failures recorded so far; clears the list (for tests that provoke some)."""
        taken = list(self.validation_failures)
        self.validation_failures.clear()
        return taken

    def record_failure(self, message: str) -> None:
        log.warning("localarm validation failure: %s", message)
        self.validation_failures.append(message)

    def inject_fault(
        self,
        operation_id: str,
        status: int,
        code: str,
        message: str = "Injected by the test.",
        *,
        times: int = 1,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Answer the next ``times`` valid requests of ``operation_id`` with this ARM error."""
        if operation_id not in self._handlers:
            raise KeyError(operation_id)
        self.faults.append(Fault(operation_id, status, code, message, times, dict(headers or {})))

    def seed_group(
        self,
        body: Mapping[str, Any],
        *,
        subscription_id: str,
        resource_group: str,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """Store a container group exactly as ``body`` (a response body) says; it is not simulated.

        ``id`` and ``name`` are rewritten to the given coordinates. Returns the resource id.
        """
        static = copy.deepcopy(dict(body))
        name = name or str(static.get("name"))
        if tags is not None:
            static["tags"] = dict(tags)
        group = Group(
            subscription=subscription_id,
            resource_group=resource_group,
            name=name,
            location=normalize_location(str(static.get("location", "westus"))),
            body={},
            created_at=self.clock.now(),
            epoch=None,
            ip=None,
            static=static,
        )
        static["id"], static["name"] = group.id, name
        errors = self.spec.by_id["ContainerGroups_Get"].responses["200"]
        assert errors is not None
        problems = errors.errors(static)
        if problems:
            raise ValueError(f"seeded body is not a valid ContainerGroup: {problems}")
        self.groups[group.key] = group
        return group.id

    def seed_example(
        self,
        example: str,
        *,
        subscription_id: str | None = None,
        resource_group: str | None = None,
        name: str | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """Seed the container group of a stored example's 200 response (e.g. ``ContainerGroupsGet_Failed``).

        Defaults to the example's own subscription, resource group and name.
        """
        data = load_example(example)
        body = data["responses"]["200"]["body"]
        params = data["parameters"]
        return self.seed_group(
            body,
            subscription_id=subscription_id or params["subscriptionId"],
            resource_group=resource_group or params["resourceGroupName"],
            name=name or params.get("containerGroupName"),
            tags=tags,
        )

    def group_body(self, subscription_id: str, resource_group: str, name: str) -> dict[str, Any] | None:
        """What a GET would answer now (without counting as a request)."""
        group = self.groups.get(group_key(subscription_id, resource_group, name))
        return None if group is None else self.render(group, self.clock.now())

    # --- rendering ---------------------------------------------------------------------------

    def _strip_secrets(self, body: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = strip_marked(body, self._group_request_schema, SECRET_MARK)
        props = out.get("properties", {})
        for volume in props.get("volumes", []) or []:
            if isinstance(volume.get("azureFile"), dict):
                volume["azureFile"].pop("storageAccountKey", None)
            if isinstance(volume.get("secret"), dict):
                volume["secret"] = {}
        for ext in props.get("extensions", []) or []:
            if isinstance(ext.get("properties"), dict):
                ext["properties"].pop("protectedSettings", None)
        return out

    def provisioning_state(self, group: Group, t: float) -> str:
        if group.deleting_at is not None:
            return "Deleting"
        if group.static is not None:
            return str(group.static.get("properties", {}).get("provisioningState", "Succeeded"))
        assert group.epoch is not None
        return group.epoch.provisioning_state(t)

    def render(self, group: Group, t: float, *, for_list: bool = False) -> dict[str, Any]:
        if group.static is not None:
            body = copy.deepcopy(group.static)
            if group.deleting_at is not None:
                body["properties"]["provisioningState"] = "Deleting"
            if for_list:
                self._drop_instance_views(body)
            return body
        assert group.epoch is not None
        epoch = group.epoch
        body = self._strip_secrets(group.body)
        body = {"id": group.id, "name": group.name, "type": GROUP_TYPE, **body, "location": group.location}
        props = body["properties"]
        props["provisioningState"] = self.provisioning_state(group, t)
        if not for_list:
            for item, rt in zip(props.get("containers", []), epoch.apps, strict=False):
                item["properties"]["instanceView"] = epoch.container_view(rt, t)
            for item, rt in zip(props.get("initContainers", []), epoch.inits, strict=False):
                item.setdefault("properties", {})["instanceView"] = epoch.container_view(rt, t)
            props["instanceView"] = {"events": epoch.group_events(t), "state": epoch.group_state(t)}
        ip = props.get("ipAddress")
        if isinstance(ip, dict) and group.ip is not None:
            ip["ip"] = group.ip
            if ip.get("dnsNameLabel"):
                ip["fqdn"] = f"{ip['dnsNameLabel']}.{group.location}.azurecontainer.io"
        identity = body.get("identity")
        if isinstance(identity, dict):
            kind = str(identity.get("type", ""))
            if "SystemAssigned" in kind:
                identity["principalId"] = str(uuid.uuid5(uuid.NAMESPACE_URL, group.id + "#principal"))
                identity["tenantId"] = str(uuid.uuid5(uuid.NAMESPACE_URL, "localarm-tenant"))
            for rid, value in (identity.get("userAssignedIdentities") or {}).items():
                if isinstance(value, dict):
                    value["principalId"] = str(uuid.uuid5(uuid.NAMESPACE_URL, rid + "#principal"))
                    value["clientId"] = str(uuid.uuid5(uuid.NAMESPACE_URL, rid + "#client"))
        return body

    @staticmethod
    def _drop_instance_views(body: dict[str, Any]) -> None:
        props = body.get("properties", {})
        props.pop("instanceView", None)
        for item in [*props.get("containers", []), *props.get("initContainers", [])]:
            item.get("properties", {}).pop("instanceView", None)

    # --- bookkeeping -------------------------------------------------------------------------

    def _reap(self, t: float) -> None:
        for key in list(self._deleting):
            group = self.groups.get(key)
            if group is None or group.deleting_at is None:
                self._deleting.discard(key)
                continue
            gone_at = group.deleting_at + max(0.0, self.knobs.delete_seconds)
            if t >= gone_at:
                del self.groups[key]
                self._deleting.discard(key)
                if group.delete_operation in self.operations:
                    self.operations[group.delete_operation].ended_at = gone_at
        now = time.monotonic()
        for sid, session in list(self.sessions.items()):
            if now - session.created > self.knobs.exec_session_ttl_seconds:
                del self.sessions[sid]

    def _new_ip(self, public: bool) -> str:
        self._ip_counter += 1
        n = self._ip_counter
        return (
            f"20.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"
            if public
            else f"10.240.{(n >> 8) & 255}.{n & 255}"
        )

    def _new_operation(self, kind: str, group: Group, t: float, epoch: Epoch | None) -> AsyncOperation:
        op = AsyncOperation(
            id=str(uuid.uuid4()),
            kind=kind,
            subscription=group.subscription,
            resource_group=group.resource_group,
            location=group.location,
            key=group.key,
            started_at=t,
            epoch=epoch,
        )
        self.operations[op.id] = op
        return op

    def _lro_headers(self, request: Request, op: AsyncOperation, *, location: bool = False) -> dict[str, str]:
        base = (
            f"{request.origin}/subscriptions/{op.subscription}/resourceGroups/{op.resource_group}"
            f"/providers/{PROVIDER}/locations/{op.location}"
        )
        headers = {"Azure-AsyncOperation": f"{base}/operations/{op.id}?api-version={self.spec.api_version}"}
        if location:
            headers["Location"] = f"{base}/operationResults/{op.id}?api-version={self.spec.api_version}"
        if self.knobs.lro_retry_after is not None:
            headers["Retry-After"] = str(self.knobs.lro_retry_after)
        return headers

    def _group(self, request: Request) -> Group:
        p = request.params
        self._check_resource_group(p["subscriptionId"], p["resourceGroupName"])
        group = self.groups.get(
            group_key(p["subscriptionId"], p["resourceGroupName"], p["containerGroupName"])
        )
        if group is None:
            raise ArmError(
                404,
                "ResourceNotFound",
                f"The Resource '{GROUP_TYPE}/{p['containerGroupName']}' under resource group "
                f"'{p['resourceGroupName']}' was not found. For more details please go to "
                "https://aka.ms/ARMResourceNotFoundFix",
            )
        return group

    def _check_resource_group(self, subscription: str, resource_group: str) -> None:
        known = self.knobs.resource_groups
        if known is not None and (subscription.lower(), resource_group.lower()) not in {
            (s.lower(), r.lower()) for s, r in known
        }:
            raise ArmError(
                404, "ResourceGroupNotFound", f"Resource group '{resource_group}' could not be found."
            )

    def _usage(
        self, subscription: str, location: str, exclude: tuple[str, str, str] | None = None
    ) -> tuple[int, float]:
        count, cpu = 0, 0.0
        for group in self.groups.values():
            if group.subscription.lower() != subscription.lower() or group.location != location:
                continue
            if group.key == exclude or group.deleting_at is not None or group.stopped():
                continue
            count += 1
            cpu += group.cpu()
        return count, cpu

    # --- ARM operations ----------------------------------------------------------------------

    async def list_groups(self, request: Request) -> ArmResponse:
        p = request.params
        subscription = p["subscriptionId"]
        rg = p.get("resourceGroupName")
        if rg is not None:
            self._check_resource_group(subscription, rg)
        groups = sorted(
            (
                g
                for g in self.groups.values()
                if g.subscription.lower() == subscription.lower()
                and (rg is None or g.resource_group.lower() == rg.lower())
            ),
            key=lambda g: g.id.lower(),
        )
        token = request.query.get("$skiptoken")
        if token:
            try:
                after = bytes.fromhex(token).decode()
            except ValueError:
                raise ArmError(400, "InvalidSkipToken", f"The skip token '{token}' is not valid.") from None
            groups = [g for g in groups if g.id.lower() > after]
        page_size = max(1, int(self.knobs.page_size))
        page, rest = groups[:page_size], groups[page_size:]
        body: dict[str, Any] = {"value": [self.render(g, request.t, for_list=True) for g in page]}
        if rest:
            next_token = page[-1].id.lower().encode().hex()
            body["nextLink"] = (
                f"{request.origin}{request.path}?api-version={self.spec.api_version}&$skiptoken={next_token}"
            )
        return ArmResponse(200, body)

    async def get_group(self, request: Request) -> ArmResponse:
        group = self._group(request)
        return ArmResponse(200, self.render(group, request.t))

    def _validate_group_semantics(self, name: str, body: Mapping[str, Any], location: str | None) -> None:
        if len(name) > 63 or not NAME_RE.fullmatch(name):
            raise ArmError(
                400,
                "InvalidContainerGroupName",
                f"The container group name '{name}' is invalid. The container group name must contain "
                "no more than 63 characters and must match the regex '[a-z0-9]([-a-z0-9]*[a-z0-9])?' "
                "(e.g. 'my-name').",
            )
        if not location:
            raise ArmError(400, "LocationRequired", "The location property is required for this definition.")
        props = body["properties"]
        items = [*props.get("initContainers", []), *props.get("containers", [])]
        seen: set[str] = set()
        for item in items:
            cname = str(item["name"])
            if len(cname) > 63 or not NAME_RE.fullmatch(cname):
                raise ArmError(
                    400,
                    "InvalidContainerName",
                    f"The container name '{cname}' in container group '{name}' is invalid. The container "
                    "name must contain no more than 63 characters and must match the regex "
                    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?' (e.g. 'my-name').",
                )
            if cname in seen:
                raise ArmError(
                    400,
                    "DuplicateContainerName",
                    f"The container name '{cname}' is used more than once in container group '{name}'.",
                )
            seen.add(cname)
            image = str(item.get("properties", {}).get("image", ""))
            if not image or "inaccessible" in image.lower():
                raise ArmError(
                    400,
                    "InaccessibleImage",
                    f"The image '{image}' in container group '{name}' is not accessible. Please check the "
                    "image and registry credential.",
                )
        apps = props.get("containers", [])
        total = {
            "Cpu": sum(float(c["properties"]["resources"]["requests"]["cpu"]) for c in apps),
            "MemoryInGB": sum(float(c["properties"]["resources"]["requests"]["memoryInGB"]) for c in apps),
        }
        for c in apps:
            limits = c["properties"]["resources"].get("limits") or {}
            for label, key in (("Cpu", "cpu"), ("MemoryInGB", "memoryInGB")):
                if key in limits and float(limits[key]) > total[label] + 1e-9:
                    raise ArmError(
                        400,
                        "ContainerLimitGreaterThanContainerGroupTotalRequest",
                        f"The '{label}' limit '{limits[key]}' in container '{c['name']}' is greater than "
                        f"the total request '{total[label]:g}' of container group '{name}'.",
                    )

    def _check_capacity(
        self,
        subscription: str,
        location: str,
        name: str,
        key: tuple[str, str, str],
        cpu: float,
        memory: float,
    ) -> None:
        if (
            not self.knobs.capacity_available
            or cpu > self.knobs.max_cpu_per_group + 1e-9
            or memory > self.knobs.max_memory_gb_per_group + 1e-9
        ):
            raise ArmError(
                409,
                "ServiceUnavailable",
                f"The requested resource with '{cpu:g}' CPU and '{memory:.1f}' GB memory is not available "
                f"in the location '{location}' at this moment. Please retry with a different resource "
                "request or in another location.",
            )
        count, used = self._usage(subscription, location, exclude=key)
        checks = (
            ("ContainerGroups", self.knobs.quota_container_groups, count, 1),
            ("StandardCores", self.knobs.quota_cores, cores_for_quota(used), cores_for_quota(cpu)),
        )
        for quota, limit, usage, requested in checks:
            if usage + requested > limit:
                raise ArmError(
                    409,
                    "ContainerGroupQuotaReached",
                    f"Resource type '{GROUP_TYPE}' container group quota '{quota}' exceeded in region "
                    f"'{location}'. Limit: '{limit}', Usage: '{usage}' Requested: '{requested}'.",
                )

    def _epoch(self, kind: str, group_name: str, body: Mapping[str, Any], t: float) -> Epoch:
        props = body["properties"]
        return Epoch(
            kind=kind,
            start=t,
            group_name=group_name,
            containers=[ContainerDef.from_body(c, init=False) for c in props.get("containers", [])],
            init_containers=[ContainerDef.from_body(c, init=True) for c in props.get("initContainers", [])],
            restart_policy=str(props.get("restartPolicy") or "Always"),
            knobs=self.knobs,
            wall=self.clock.wall,
            volumes=list(props.get("volumes") or []),
        )

    async def put_group(self, request: Request) -> ArmResponse:
        p = request.params
        subscription, rg, name = p["subscriptionId"], p["resourceGroupName"], p["containerGroupName"]
        self._check_resource_group(subscription, rg)
        stored: dict[str, Any] = strip_marked(request.body, self._group_request_schema, READONLY_MARK)
        location = normalize_location(str(stored.get("location") or ""))
        self._validate_group_semantics(name, stored, location)
        key = group_key(subscription, rg, name)
        existing = self.groups.get(key)
        t = request.t
        if existing is not None and existing.deleting_at is not None:
            raise ArmError(
                409,
                "Conflict",
                f"The container group '{name}' is being deleted; retry once the deletion has completed.",
            )
        if existing is not None and existing.location != location:
            raise ArmError(
                400,
                "InvalidResourceLocation",
                f"The resource '{name}' already exists in location '{existing.location}' in resource group "
                f"'{existing.resource_group}'. A resource with the same name cannot be created in location "
                f"'{location}'. Please select a new resource name.",
            )
        apps = [ContainerDef.from_body(c, init=False) for c in stored["properties"].get("containers", [])]
        cpu = total_cpu(apps)
        memory = sum(c.memory_gb for c in apps)
        self._check_capacity(subscription, location, name, key, cpu, memory)
        stored["location"] = location
        ip_type = str((stored["properties"].get("ipAddress") or {}).get("type", "Public"))
        if existing is None or existing.static is not None:
            group = Group(
                subscription=subscription,
                resource_group=rg,
                name=name,
                location=location,
                body=stored,
                created_at=t,
                epoch=self._epoch("create" if existing is None else "update", name, stored, t),
                ip=self._new_ip(ip_type != "Private") if "ipAddress" in stored["properties"] else None,
            )
            self.groups[key] = group
            status = 201 if existing is None else 200
            op = self._new_operation("create" if existing is None else "update", group, t, group.epoch)
        else:
            group = existing
            assert group.epoch is not None
            old_props, new_props = group.body["properties"], stored["properties"]
            redeploy = any(
                old_props.get(k) != new_props.get(k)
                for k in ("containers", "initContainers", "restartPolicy", "volumes", "osType", "sku")
            )
            group.body = stored
            if "ipAddress" in new_props and group.ip is None:
                group.ip = self._new_ip(ip_type != "Private")
            if redeploy or group.epoch.stopped_at is not None:
                group.epoch = self._epoch("update", name, stored, t)
            status = 200
            op = self._new_operation("update", group, t, group.epoch)
        return ArmResponse(status, self.render(group, t), self._lro_headers(request, op))

    async def patch_group(self, request: Request) -> ArmResponse:
        group = self._group(request)
        if group.deleting_at is not None:
            raise ArmError(409, "Conflict", f"The container group '{group.name}' is being deleted.")
        tags = request.body.get("tags")
        if tags is not None:
            if group.static is not None:
                group.static["tags"] = dict(tags)
            else:
                group.body["tags"] = dict(tags)
        return ArmResponse(200, self.render(group, request.t))

    async def delete_group(self, request: Request) -> ArmResponse:
        p = request.params
        self._check_resource_group(p["subscriptionId"], p["resourceGroupName"])
        group = self.groups.get(
            group_key(p["subscriptionId"], p["resourceGroupName"], p["containerGroupName"])
        )
        if group is None:
            return ArmResponse(204)
        t = request.t
        if group.deleting_at is None:
            group.deleting_at = t
            self._deleting.add(group.key)
            if group.epoch is not None:
                group.epoch.stop(t)
            op = self._new_operation("delete", group, t, None)
            group.delete_operation = op.id
        else:
            assert group.delete_operation is not None
            op = self.operations[group.delete_operation]
        self._reap(t)
        return ArmResponse(202, None, self._lro_headers(request, op, location=True))

    def _simulated(self, request: Request) -> Group:
        group = self._group(request)
        if group.deleting_at is not None:
            raise ArmError(409, "Conflict", f"The container group '{group.name}' is being deleted.")
        return group

    async def stop_group(self, request: Request) -> ArmResponse:
        group = self._simulated(request)
        if group.epoch is not None:
            group.epoch.stop(request.t)
        return ArmResponse(204)

    async def start_group(self, request: Request) -> ArmResponse:
        group = self._simulated(request)
        if group.epoch is None or group.epoch.stopped_at is None:
            return ArmResponse(204)  # already running
        location, subscription = group.location, group.subscription
        self._check_capacity(subscription, location, group.name, group.key, group.cpu(), 0.0)
        group.epoch = self._epoch("start", group.name, group.body, request.t)
        op = self._new_operation("start", group, request.t, group.epoch)
        return ArmResponse(202, None, self._lro_headers(request, op))

    async def restart_group(self, request: Request) -> ArmResponse:
        group = self._simulated(request)
        if group.epoch is not None:
            group.epoch.stop(request.t)
            group.epoch = self._epoch("restart", group.name, group.body, request.t)
        return ArmResponse(204)

    async def outbound_dependencies(self, request: Request) -> ArmResponse:
        self._group(request)
        return ArmResponse(200, [])

    async def delete_service_association_link(self, request: Request) -> ArmResponse:
        return ArmResponse(204)

    async def list_operations(self, request: Request) -> ArmResponse:
        def entry(name: str, resource: str, operation: str, description: str) -> dict[str, Any]:
            return {
                "name": f"{PROVIDER}/{name}",
                "display": {
                    "provider": "Microsoft Container Instance",
                    "resource": resource,
                    "operation": operation,
                    "description": description,
                },
                "origin": "User",
            }

        return ArmResponse(
            200,
            {
                "value": [
                    entry(
                        "containerGroups/read",
                        "Container Group",
                        "Get Container Groups",
                        "Get all container groups.",
                    ),
                    entry(
                        "containerGroups/write",
                        "Container Group",
                        "Create or Update Container Group",
                        "Create or update a specific container group.",
                    ),
                    entry(
                        "containerGroups/delete",
                        "Container Group",
                        "Delete Container Group",
                        "Delete the specific container group.",
                    ),
                    entry(
                        "containerGroups/restart/action",
                        "Container Group",
                        "Restart Container Group",
                        "Restarts a specific container group.",
                    ),
                    entry(
                        "containerGroups/stop/action",
                        "Container Group",
                        "Stop Container Group",
                        "Stops a specific container group.",
                    ),
                    entry(
                        "containerGroups/start/action",
                        "Container Group",
                        "Start Container Group",
                        "Starts a specific container group.",
                    ),
                    entry(
                        "containerGroups/containers/logs/read",
                        "Container Logs",
                        "Get Container Logs",
                        "Get the logs for a specific container.",
                    ),
                    entry(
                        "containerGroups/containers/exec/action",
                        "Container",
                        "Exec into Container",
                        "Exec into a specific container.",
                    ),
                    entry(
                        "containerGroups/containers/attach/action",
                        "Container",
                        "Attach to Container",
                        "Attach to the output stream of a container.",
                    ),
                    entry(
                        "locations/usages/read",
                        "Usage",
                        "Get Usage",
                        "Get the usage for a specific location.",
                    ),
                    entry(
                        "locations/operations/read",
                        "Operation",
                        "Get Operation Status",
                        "Get the status of an asynchronous operation.",
                    ),
                ]
            },
        )

    async def list_usage(self, request: Request) -> ArmResponse:
        p = request.params
        subscription, location = p["subscriptionId"], normalize_location(p["location"])
        count, cpu = self._usage(subscription, location)
        base = f"/subscriptions/{subscription}/providers/{PROVIDER}/locations/{location}/usages"

        def usage(name: str, localized: str, current: int, limit: int) -> dict[str, Any]:
            return {
                "id": f"{base}/{name}",
                "unit": "Count",
                "currentValue": current,
                "limit": limit,
                "name": {"value": name, "localizedValue": localized},
            }

        return ArmResponse(
            200,
            {
                "value": [
                    usage("ContainerGroups", "Container Groups", count, self.knobs.quota_container_groups),
                    usage("StandardCores", "Standard Cores", cores_for_quota(cpu), self.knobs.quota_cores),
                ]
            },
        )

    async def list_cached_images(self, request: Request) -> ArmResponse:
        return ArmResponse(
            200,
            {
                "value": [
                    {"osType": "Linux", "image": "mcr.microsoft.com/azuredocs/aci-helloworld:latest"},
                    {"osType": "Linux", "image": "busybox:latest"},
                    {"osType": "Windows", "image": "mcr.microsoft.com/windows/servercore:ltsc2022"},
                ]
            },
        )

    async def list_capabilities(self, request: Request) -> ArmResponse:
        location = normalize_location(request.params["location"])
        return ArmResponse(
            200,
            {
                "value": [
                    {
                        "resourceType": "containerGroups",
                        "osType": os_type,
                        "location": location,
                        "ipAddressType": "Public",
                        "gpu": "None",
                        "capabilities": {
                            "maxMemoryInGB": self.knobs.max_memory_gb_per_group,
                            "maxCpu": self.knobs.max_cpu_per_group,
                            "maxGpuCount": 0,
                        },
                    }
                    for os_type in ("Linux", "Windows")
                ]
            },
        )

    def _container(self, request: Request) -> tuple[Group, str]:
        group = self._group(request)
        container = request.params["containerName"]
        if container not in group.container_names():
            raise ArmError(
                404,
                "ContainerNotFound",
                f"The container '{container}' could not be found in container group '{group.name}'.",
            )
        return group, container

    async def list_logs(self, request: Request) -> ArmResponse:
        group, container = self._container(request)
        tail = request.params.get("tail")
        timestamps = bool(request.params.get("timestamps", False))
        content = ""
        if group.epoch is not None:
            content = render_logs(
                group.epoch.log_lines(container, request.t),
                tail=int(tail) if tail is not None else None,
                timestamps=timestamps,
            )
        return ArmResponse(200, {"content": content})

    def _session(
        self, request: Request, kind: str, command: str, terminal: tuple[int, int] | None
    ) -> ArmResponse:
        group, container = self._container(request)
        if (
            group.epoch is None
            or group.deleting_at is not None
            or not group.epoch.is_running(container, request.t)
        ):
            raise ArmError(
                409,
                "ContainerNotRunning",
                f"The container '{container}' in container group '{group.name}' is not running.",
            )
        session = ExecSession(
            id=secrets.token_hex(16),
            kind=kind,
            password=secrets.token_urlsafe(24),
            key=group.key,
            container=container,
            command=command,
            terminal=terminal,
            created=time.monotonic(),
        )
        self.sessions[session.id] = session
        ws_origin = request.origin.replace("https://", "wss://").replace("http://", "ws://")
        return ArmResponse(
            200,
            {"webSocketUri": f"{ws_origin}{LOCAL_PREFIX}{kind}/{session.id}", "password": session.password},
        )

    async def execute_command(self, request: Request) -> ArmResponse:
        body = request.body or {}
        size = body.get("terminalSize") or {}
        terminal = (int(size.get("rows", 24)), int(size.get("cols", 80))) if size else None
        return self._session(request, "exec", str(body.get("command", "")), terminal)

    async def attach(self, request: Request) -> ArmResponse:
        return self._session(request, "attach", "", None)

    async def get_operation_status(self, request: Request) -> ArmResponse:
        op = self._operation(request)
        t = request.t
        body: dict[str, Any] = {
            "id": request.path,
            "name": op.id,
            "startTime": iso(self.clock.wall(op.started_at)),
        }
        status, error = self._operation_state(op, t)
        body["status"] = status
        if status != "InProgress":
            body["endTime"] = iso(self.clock.wall(op.ended_at if op.ended_at is not None else t))
        if error is not None:
            body["error"] = error
        headers = {}
        if status == "InProgress" and self.knobs.lro_retry_after is not None:
            headers["Retry-After"] = str(self.knobs.lro_retry_after)
        return ArmResponse(200, body, headers)

    async def get_operation_result(self, request: Request) -> ArmResponse:
        op = self._operation(request)
        status, _ = self._operation_state(op, request.t)
        if status == "InProgress":
            headers = {"Location": f"{request.origin}{request.path_qs}"}
            if self.knobs.lro_retry_after is not None:
                headers["Retry-After"] = str(self.knobs.lro_retry_after)
            return ArmResponse(202, None, headers)
        return ArmResponse(204)

    def _operation(self, request: Request) -> AsyncOperation:
        op = self.operations.get(request.params["operationId"])
        if op is None or op.subscription.lower() != request.params["subscriptionId"].lower():
            raise ArmError(
                404, "OperationNotFound", f"The operation '{request.params['operationId']}' was not found."
            )
        return op

    def _operation_state(self, op: AsyncOperation, t: float) -> tuple[str, dict[str, Any] | None]:
        if op.kind == "delete":
            return ("Succeeded", None) if op.ended_at is not None else ("InProgress", None)
        group = self.groups.get(op.key)
        if group is None or group.epoch is not op.epoch or op.epoch is None:
            if op.ended_at is None:
                op.ended_at = t
            return "Canceled", {
                "code": "Canceled",
                "message": "The operation was canceled by a later operation.",
            }
        epoch = op.epoch
        state = epoch.provisioning_state(t)
        if state == "Succeeded":
            if op.ended_at is None:
                op.ended_at = epoch.started_at if epoch.started_at is not None else t
            return "Succeeded", None
        if state == "Failed":
            if op.ended_at is None:
                op.ended_at = epoch.failed_at if epoch.failed_at is not None else t
            code, message = epoch.failure or ("Failed", "The container group failed.")
            return "Failed", {
                "code": "ResourceDeploymentFailure",
                "message": "The resource operation completed with terminal provisioning state 'Failed'.",
                "details": [{"code": code, "message": message}],
            }
        return "InProgress", None

    # --- the HTTP pipeline -------------------------------------------------------------------

    def match(self, method: str, path: str) -> tuple[Operation | None, dict[str, str], bool]:
        op, values, known = self.spec.match(method, path)
        if op is not None:
            return op, values, known
        segments = split_path(path)
        for local in self.local_operations:
            got = local.match(segments)
            if got is not None:
                known = True
                if local.method == method:
                    return local, got, True
        return None, {}, known

    def validate_request(
        self,
        op: Operation,
        values: Mapping[str, str],
        query: MultiMapping[str],
        headers: Mapping[str, str],
        body_text: str,
    ) -> tuple[list[str], ArmError | None, dict[str, Any], Any]:
        failures: list[str] = []
        special: ArmError | None = None
        params: dict[str, Any] = {}
        versions = query.getall("api-version", [])
        if not versions:
            special = ArmError(
                400,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
            failures.append("query parameter 'api-version' is required")
        elif versions[0] != self.spec.api_version:
            version = versions[0]
            if API_VERSION_RE.fullmatch(version):
                special = ArmError(
                    400,
                    "NoRegisteredProviderFound",
                    f"No registered resource provider found for API version '{version}' and namespace "
                    f"'{PROVIDER}'. The supported api-versions are '{self.spec.api_version}'.",
                )
            else:
                special = ArmError(
                    400,
                    "InvalidApiVersionParameter",
                    f"The api-version '{version}' is invalid. The supported versions are "
                    f"'{self.spec.api_version}'.",
                )
            failures.append(f"api-version {version!r} is not {self.spec.api_version!r}")
        for param in op.parameters:
            raw: str | None
            if param.location == "path":
                raw = values.get(param.name)
            elif param.location == "query":
                given = query.getall(param.name, [])
                if len(given) > 1:
                    failures.append(f"query parameter {param.name!r} is given {len(given)} times")
                raw = given[0] if given else None
            elif param.location == "header":
                raw = headers.get(param.name)
            else:
                continue
            if raw is None:
                if param.required and param.name != "api-version":  # (api-version: reported above)
                    failures.append(f"{param.location} parameter {param.name!r} is required")
                continue
            value = coerce_parameter(param, raw)
            failures += [
                f"{param.location} parameter {param.name!r}: {e}" for e in param.validator.errors(value)
            ]
            params[param.name] = value
        declared = {p.name for p in op.parameters if p.location == "query"}
        for name in set(query.keys()):
            if name not in declared and not (op.pageable and name == "$skiptoken"):
                failures.append(f"query parameter {name!r} is not declared by {op.operation_id}")
        body: Any = None
        if op.body is None:
            if body_text.strip():
                failures.append(f"{op.operation_id} takes no request body, but one was sent")
        elif not body_text.strip():
            if op.body.required:
                failures.append(f"body parameter {op.body.name!r} is required")
        else:
            content_type = headers.get("Content-Type", "").split(";")[0].strip().lower()
            if content_type != "application/json":
                failures.append(
                    f"request body has Content-Type {content_type!r}, the operation consumes application/json"
                )
            try:
                body = json.loads(body_text)
            except ValueError as e:
                failures.append(f"request body is not JSON: {e}")
            else:
                failures += [f"body {op.body.name!r}: {e}" for e in op.body.validator.errors(body)]
        return failures, special, params, body

    def validate_response(self, op: Operation | None, response: ArmResponse) -> list[str]:
        if op is None:
            return (
                [f"body: {e}" for e in self._cloud_error.errors(response.body)]
                if response.body is not None
                else []
            )
        declared, validator = op.response_validator(response.status)
        if not declared:
            return [f"status {response.status} is not declared by {op.operation_id}"]
        if validator is None:
            return (
                []
                if response.body is None
                else [f"status {response.status} declares no body, but one was sent"]
            )
        if response.body is None:
            return [f"status {response.status} declares a body, but none was sent"]
        return [f"body: {e}" for e in validator.errors(response.body)]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        method = request.method
        raw_path = request.raw_path.split("?", 1)[0]
        t = self.clock.now()
        self._reap(t)
        segments = raw_path.strip("/").split("/")
        subscription = segments[1] if len(segments) > 1 and segments[0].lower() == "subscriptions" else None
        kind = "read" if method in ("GET", "HEAD") else "write"
        headers: dict[str, str] = {
            "x-ms-request-id": str(uuid.uuid4()),
            "x-ms-correlation-request-id": request.headers.get("x-ms-correlation-request-id")
            or str(uuid.uuid4()),
        }
        if "x-ms-client-request-id" in request.headers:
            headers["x-ms-client-request-id"] = request.headers["x-ms-client-request-id"]
        op, values, known = self.match(method, raw_path)
        where = f"{method} {request.path_qs}"
        response: ArmResponse
        decision = None
        if self.knobs.require_auth and not request.headers.get("Authorization", "").startswith("Bearer "):
            response = ArmError(
                401, "AuthenticationFailed", "Authentication failed. The 'Authorization' header is missing."
            ).response()
        else:
            if self.knobs.throttling:
                rate = self.knobs.reads_per_second if kind == "read" else self.knobs.writes_per_second
                burst = self.knobs.reads_burst if kind == "read" else self.knobs.writes_burst
                decision = self.throttler.admit((subscription or "tenant").lower(), kind, rate, burst)
                headers[f"x-ms-ratelimit-remaining-subscription-{kind}s"] = str(decision.remaining)
            else:  # not enforced: the bucket is always full
                burst = self.knobs.reads_burst if kind == "read" else self.knobs.writes_burst
                headers[f"x-ms-ratelimit-remaining-subscription-{kind}s"] = str(burst)
            if decision is not None and not decision.allowed:
                response = ArmResponse(
                    429,
                    error_body(
                        "SubscriptionRequestsThrottled",
                        f"Number of '{kind}' requests for subscription '{subscription}' exceeded the "
                        f"limit. Please try again after '{decision.retry_after}' seconds after additional "
                        "tokens are available. Refer to https://aka.ms/arm-throttling",
                    ),
                    {"Retry-After": str(decision.retry_after)},
                )
            elif op is None:
                if known:
                    self.record_failure(f"request {where}: method {method} is not declared for this path")
                    response = ArmError(
                        405,
                        "HttpMethodNotAllowed",
                        f"The HTTP method '{method}' is not supported at '{raw_path}'.",
                    ).response()
                else:
                    self.record_failure(f"request {where}: the path matches no operation of the spec")
                    response = ArmError(
                        404,
                        "InvalidResourceType",
                        f"The resource type could not be found in the namespace '{PROVIDER}' for api version "
                        f"'{self.spec.api_version}'.",
                    ).response()
            else:
                body_text = await request.text()
                failures, special, params, body = self.validate_request(
                    op, values, request.query, request.headers, body_text
                )
                if failures:
                    for failure in failures:
                        self.record_failure(f"request {where} ({op.operation_id}): {failure}")
                    response = (
                        special.response()
                        if special is not None
                        else ArmResponse(
                            400,
                            error_body(
                                "InvalidRequestContent",
                                "The request content was invalid and could not be deserialized: "
                                + "; ".join(failures),
                            ),
                        )
                    )
                else:
                    response = await self._dispatch(op, Request(request, params, body, t))
        problems = self.validate_response(op, response)
        if problems:
            answered = op.operation_id if op else "no operation"
            for problem in problems:
                self.record_failure(f"response {response.status} to {where} ({answered}): {problem}")
            response = ArmResponse(
                500,
                error_body(
                    "InternalServerError",
                    "The local ARM server produced an invalid response: " + "; ".join(problems),
                ),
            )
        self.calls[f"{op.operation_id if op else 'unknown'} {response.status}"] += 1
        self.recent.append((t, method, request.path, response.status))
        headers.update(response.headers)
        if response.body is None:
            return web.Response(status=response.status, headers=headers)
        return web.Response(
            status=response.status,
            body=json.dumps(response.body).encode(),
            content_type="application/json",
            charset="utf-8",
            headers=headers,
        )

    async def _dispatch(self, op: Operation, request: Request) -> ArmResponse:
        for fault in self.faults:
            if fault.operation_id == op.operation_id and fault.times > 0:
                fault.times -= 1
                if fault.times == 0:
                    self.faults.remove(fault)
                return ArmResponse(fault.status, error_body(fault.code, fault.message), dict(fault.headers))
        handler = self._handlers.get(op.operation_id)
        if handler is None:
            return ArmError(501, "NotImplemented", f"{op.operation_id} is not implemented.").response()
        try:
            return await handler(request)
        except ArmError as e:
            return e.response()
        except Exception:
            message = traceback.format_exc()
            self.record_failure(f"server error in {op.operation_id}: {message}")
            return ArmError(500, "InternalServerError", "The local ARM server failed.").response()


@dataclass
class Request:
    """What a handler sees: the validated parameters and body, and the time of arrival."""

    raw: web.Request
    params: dict[str, Any]
    body: Any
    t: float

    @property
    def origin(self) -> str:
        return f"{self.raw.scheme}://{self.raw.host}"

    @property
    def path(self) -> str:
        return self.raw.raw_path.split("?", 1)[0]

    @property
    def path_qs(self) -> str:
        return self.raw.raw_path

    @property
    def query(self) -> MultiMapping[str]:
        return self.raw.query


# ---------------------------------------------------------------------------------------------
# The application


ARM_KEY = web.AppKey("localarm", LocalArm)


def create_app(arm: LocalArm | None = None, **knob_values: Any) -> web.Application:
    """An aiohttp application serving ``arm`` (a new :class:`LocalArm` with these knobs if not given)."""
    from . import admin, websocket

    arm = arm if arm is not None else LocalArm(**knob_values)
    app = web.Application(client_max_size=32 * 1024 * 1024)
    app[ARM_KEY] = arm
    websocket.add_routes(app)
    admin.add_routes(app)

    async def handle(request: web.Request) -> web.StreamResponse:
        return await request.app[ARM_KEY].handle(request)

    app.router.add_route("*", "/{tail:.*}", handle)

    async def close_websockets(app: web.Application) -> None:
        for ws in list(app[ARM_KEY].websockets):
            with contextlib.suppress(Exception):
                await ws.close(code=1001, message=b"server shutdown")

    app.on_shutdown.append(close_websockets)
    return app


@contextlib.asynccontextmanager
async def serve(
    arm: LocalArm | None = None, *, host: str = "127.0.0.1", port: int = 0, **knob_values: Any
) -> AsyncIterator[LocalArm]:
    """Run the server on ``host:port`` (0: a free port) for the duration of the block.

    Yields the :class:`LocalArm` with ``base_url`` set (e.g. ``http://127.0.0.1:40123``).
    """
    arm = arm if arm is not None else LocalArm(**knob_values)
    app = create_app(arm)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = runner.addresses[0]
        arm.base_url = f"http://{host}:{bound[1]}"
        yield arm
    finally:
        await runner.cleanup()
        arm.base_url = None


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> None:
    """Poll ``predicate`` until true (a helper for tests driving the simulation in real time)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(interval)

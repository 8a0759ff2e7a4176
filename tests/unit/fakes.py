"""In-memory fakes for unit tests of the pod controller: the API server, a provider, a clock.

Each fake supports exactly what the pods package uses and raises on anything else, so a test
can never pass because a fake quietly accepted a request it does not understand.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import datetime
import itertools
import json
import re
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

from vk_operator.domain.model import (
    Capacity,
    ContainerPhase,
    ContainerStatus,
    PodPhase,
    PodRef,
    ProviderPodStatus,
)
from vk_operator.domain.prepared import PreparedPod
from vk_operator.kube import ApiError, RateLimiter
from vk_operator.kube.client import PARTIAL_METADATA_LIST, STRATEGIC_MERGE_PATCH
from vk_operator.pods.reconciler import Clock

Key = tuple[str, str]
T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def rfc3339(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the clock ---------------------------------------------------------------------------------------
class FakeClock:
    """Monotonic and wall time that move only when a test says so (both by the same amount)."""

    def __init__(self, start: datetime.datetime = T0, monotonic: float = 1000.0) -> None:
        self._start_wall = start
        self._start_mono = monotonic
        self._mono = monotonic

    def monotonic(self) -> float:
        return self._mono

    def utcnow(self) -> datetime.datetime:
        return self._start_wall + datetime.timedelta(seconds=self._mono - self._start_mono)

    def advance(self, seconds: float) -> None:
        assert seconds >= 0, "time does not go back"
        self._mono += seconds

    @property
    def clock(self) -> Clock:
        return Clock(monotonic=self.monotonic, utcnow=self.utcnow)


# -- the API server ----------------------------------------------------------------------------------
_POD_LIST = re.compile(r"^/api/v1(?:/namespaces/(?P<ns>[^/]+))?/pods$")
_POD = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<name>[^/]+)$")
_POD_STATUS = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<name>[^/]+)/status$")
_EVENTS = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/events$")
_SERVICES = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/services$")
_OBJECT = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/(?P<kind>configmaps|secrets)/(?P<name>[^/]+)$")
_TOKEN = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/serviceaccounts/(?P<sa>[^/]+)/token$")
_FIELD_SELECTOR = re.compile(r"^spec\.nodeName=(?P<node>[^,]+)$")
# Lists of the pod status that a strategic-merge patch merges by key (core/v1 PodStatus); other
# lists (containerStatuses...) are replaced whole.
_MERGE_KEYS = {"conditions": "type", "podIPs": "ip", "hostIPs": "ip"}


def _supported(condition: bool, what: str) -> None:
    if not condition:
        raise NotImplementedError(f"fake kube: {what} is not supported")


def _error(status: int, reason: str, method: str, path: str, message: str = "") -> ApiError:
    return ApiError(status, {"reason": reason, "message": message or reason}, method, path)


def _merge(current: Any, patch: Any, field: str | None = None) -> Any:
    """A strategic merge, enough for the pod status: maps merge (None deletes), keyed lists merge
    by their key, other lists and scalars replace."""
    if isinstance(patch, dict) and isinstance(current, dict):
        merged = dict(current)
        for key, value in patch.items():
            if value is None:
                merged.pop(key, None)
            elif key in merged:
                merged[key] = _merge(merged[key], value, key)
            else:
                merged[key] = copy.deepcopy(value)
        return merged
    if isinstance(patch, list) and isinstance(current, list) and field in _MERGE_KEYS:
        merge_key = _MERGE_KEYS[field]
        merged_list = [copy.deepcopy(item) for item in current]
        for item in patch:
            for i, old in enumerate(merged_list):
                if old.get(merge_key) == item.get(merge_key):
                    merged_list[i] = _merge(old, item)
                    break
            else:
                merged_list.append(copy.deepcopy(item))
        return merged_list
    return copy.deepcopy(patch)


class FakeKube:
    """The API server's pods (and the few other objects the pods package reads), in memory.

    Every change bumps one resourceVersion counter and is queued as a watch event for the node
    (``take_watch``); tests deliver those to ``PodController.observe`` when kopf would.
    """

    def __init__(self, node_name: str, *, max_page: int = 20) -> None:
        self.node_name = node_name
        self.max_page = max_page  # a server may return fewer items than `limit`: exercises `continue`
        self.pods: dict[Key, dict[str, Any]] = {}
        self.objects: dict[str, dict[str, Any]] = {}  # configmaps and secrets by path
        self.rv = 100
        self._uids = itertools.count(1)
        self._watch: list[tuple[str, dict[str, Any]]] = []
        # What the controller asked of the API (not what tests did through the helpers).
        self.requests: list[tuple[str, str]] = []
        self.patches: list[tuple[Key, dict[str, Any]]] = []
        self.deletes: list[tuple[Key, dict[str, Any] | None]] = []
        self.posted_events: list[dict[str, Any]] = []
        self.lists: list[dict[str, Any]] = []  # the query of every LIST
        self.token_requests: list[dict[str, Any]] = []  # the body of every TokenRequest
        # Refusals, as the Node authorizer and NodeRestriction answer right after a pod's binding:
        # the next ``refuse[path]`` GETs of that ConfigMap/Secret are 403, the next
        # ``refuse_tokens`` TokenRequests 404 "pod not found".
        self.refuse: collections.Counter[str] = collections.Counter()
        self.refuse_tokens = 0

    # -- helpers for tests (the "user" and other controllers) ----------------------------------------
    def _bump(self, pod: dict[str, Any]) -> None:
        self.rv += 1
        pod["metadata"]["resourceVersion"] = str(self.rv)

    def _emit(self, event: str, pod: dict[str, Any]) -> None:
        if pod.get("spec", {}).get("nodeName") == self.node_name:
            self._watch.append((event, copy.deepcopy(pod)))

    def add(self, pod: dict[str, Any]) -> dict[str, Any]:
        pod = copy.deepcopy(pod)
        key = (pod["metadata"]["namespace"], pod["metadata"]["name"])
        assert key not in self.pods, f"{key} exists: the API refuses a second pod of that name"
        pod["metadata"].setdefault("uid", f"uid-{next(self._uids)}")
        pod["metadata"].setdefault("creationTimestamp", rfc3339(T0))
        self._bump(pod)
        self.pods[key] = pod
        self._emit("ADDED", pod)
        return copy.deepcopy(pod)

    def update(self, key: Key, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        pod = self.pods[key]
        change(pod)
        self._bump(pod)
        self._emit("MODIFIED", pod)
        return copy.deepcopy(pod)

    def begin_delete(self, key: Key, grace: int, now: datetime.datetime) -> dict[str, Any]:
        """A graceful delete: the object stays, Terminating, until the kubelet removes it."""

        def mark(pod: dict[str, Any]) -> None:
            pod["metadata"]["deletionTimestamp"] = rfc3339(now + datetime.timedelta(seconds=grace))
            pod["metadata"]["deletionGracePeriodSeconds"] = grace

        return self.update(key, mark)

    def force_delete(self, key: Key) -> dict[str, Any]:
        """``kubectl delete --force --grace-period=0``: gone at once."""
        pod = self.pods.pop(key)
        self._bump(pod)
        self._emit("DELETED", pod)
        return copy.deepcopy(pod)

    def take_watch(self) -> list[tuple[str, dict[str, Any]]]:
        events, self._watch = self._watch, []
        return events

    def pod(self, key: Key) -> dict[str, Any] | None:
        found = self.pods.get(key)
        return copy.deepcopy(found) if found is not None else None

    # -- the client's interface ------------------------------------------------------------------
    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        data: bytes | None = None,
        content_type: str = "application/json",
        accept: str = "application/json",
        timeout: float = 30,
        limiter: RateLimiter | None = None,
    ) -> Any:
        self.requests.append((method, path))
        if method == "GET" and (match := _POD_LIST.match(path)):
            return self._list(match["ns"], dict(query or {}), accept, path)
        if method == "POST" and _EVENTS.match(path):
            _supported(data is not None and body is None, "an event not posted encoded")
            assert data is not None
            event = json.loads(data)
            _supported(event.get("kind") == "Event", f"POST of {event.get('kind')} to events")
            self.posted_events.append(event)
            return event
        raise NotImplementedError(f"fake kube: {method} {path} (query {query}) is not supported")

    def _list(self, namespace: str | None, query: dict[str, Any], accept: str, path: str) -> dict[str, Any]:
        self.lists.append({**query, "accept": accept})
        _supported(set(query) <= {"fieldSelector", "limit", "continue"}, f"LIST with query {query}")
        _supported(accept in ("application/json", PARTIAL_METADATA_LIST), f"LIST as {accept}")
        selector = _FIELD_SELECTOR.match(query.get("fieldSelector", ""))
        if selector is None:
            raise NotImplementedError(f"fake kube: field selector {query.get('fieldSelector')!r}")
        node = selector["node"]
        matching = [
            pod
            for key, pod in sorted(self.pods.items())
            if pod.get("spec", {}).get("nodeName") == node and (namespace is None or key[0] == namespace)
        ]
        start = int(query.get("continue") or 0)
        limit = min(int(query.get("limit") or len(matching) or 1), self.max_page)
        page = matching[start : start + limit]
        metadata: dict[str, Any] = {"resourceVersion": str(self.rv)}
        if start + limit < len(matching):
            metadata["continue"] = str(start + limit)
        if accept == PARTIAL_METADATA_LIST:
            items: Any = [
                {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": p["metadata"]}
                for p in page
            ]
            kind = "PartialObjectMetadataList"
        else:
            items, kind = page, "PodList"
        return copy.deepcopy({"kind": kind, "metadata": metadata, "items": items or None})

    async def get(self, path: str, **query: Any) -> Any:
        self.requests.append(("GET", path))
        if query:
            raise NotImplementedError(f"fake kube: GET {path} with query {query}")
        if match := _POD.match(path):
            pod = self.pods.get((match["ns"], match["name"]))
            if pod is None:
                raise _error(404, "NotFound", "GET", path)
            return copy.deepcopy(pod)
        if _SERVICES.match(path):
            return {"kind": "ServiceList", "metadata": {"resourceVersion": str(self.rv)}, "items": []}
        if _OBJECT.match(path):
            if self.refuse[path] > 0:
                self.refuse[path] -= 1
                message = "node: no relationship found between node and this object"
                raise _error(403, "Forbidden", "GET", path, message)
            obj = self.objects.get(path)
            if obj is None:
                raise _error(404, "NotFound", "GET", path)
            return copy.deepcopy(obj)
        raise NotImplementedError(f"fake kube: GET {path} is not supported")

    async def create(self, path: str, body: dict[str, Any]) -> Any:
        self.requests.append(("POST", path))
        if _TOKEN.match(path):
            _supported(body.get("kind") == "TokenRequest", f"POST of {body.get('kind')} to token")
            self.token_requests.append(copy.deepcopy(body))
            if self.refuse_tokens > 0:
                self.refuse_tokens -= 1
                raise _error(404, "NotFound", "POST", path, "pods not found")
            token = f"fake-token-{len(self.token_requests)}"
            return {**body, "status": {"token": token, "expirationTimestamp": rfc3339(T0)}}
        if _EVENTS.match(path):
            self.posted_events.append(copy.deepcopy(body))
            return body
        raise NotImplementedError(f"fake kube: POST {path} is not supported")

    async def patch(self, path: str, body: Any, content_type: str = STRATEGIC_MERGE_PATCH) -> Any:
        self.requests.append(("PATCH", path))
        match = _POD_STATUS.match(path)
        if match is None or content_type != STRATEGIC_MERGE_PATCH:
            raise NotImplementedError(f"fake kube: PATCH {path} ({content_type}) is not supported")
        _supported(set(body) <= {"metadata", "status"}, f"a status patch of {sorted(body)}")
        _supported(set(body.get("metadata", {})) <= {"uid"}, f"a status patch of metadata {body['metadata']}")
        key = (match["ns"], match["name"])
        self.patches.append((key, copy.deepcopy(body)))
        pod = self.pods.get(key)
        if pod is None:
            raise _error(404, "NotFound", "PATCH", path)
        uid = body.get("metadata", {}).get("uid")
        if uid is not None and uid != pod["metadata"]["uid"]:
            raise _error(409, "Conflict", "PATCH", path, f"Precondition failed: UID in precondition: {uid}")
        pod["status"] = _merge(pod.get("status") or {}, body.get("status") or {})
        self._bump(pod)
        self._emit("MODIFIED", pod)
        return copy.deepcopy(pod)

    async def delete(self, path: str, body: dict[str, Any] | None = None) -> Any:
        self.requests.append(("DELETE", path))
        match = _POD.match(path)
        if match is None:
            raise NotImplementedError(f"fake kube: DELETE {path} is not supported")
        _supported(set(body or {}) <= {"gracePeriodSeconds", "preconditions"}, f"DELETE with {body}")
        key = (match["ns"], match["name"])
        self.deletes.append((key, copy.deepcopy(body)))
        pod = self.pods.get(key)
        if pod is None:
            raise _error(404, "NotFound", "DELETE", path)
        uid = ((body or {}).get("preconditions") or {}).get("uid")
        if uid is not None and uid != pod["metadata"]["uid"]:
            raise _error(409, "Conflict", "DELETE", path, f"Precondition failed: UID in precondition: {uid}")
        _supported((body or {}).get("gracePeriodSeconds") == 0, "a graceful DELETE (the kubelet's is final)")
        del self.pods[key]
        self._bump(pod)
        self._emit("DELETED", pod)
        return copy.deepcopy(pod)


# -- the provider ------------------------------------------------------------------------------------
def running_status(pod: Mapping[str, Any], ip: str) -> ProviderPodStatus:
    containers = tuple(
        ContainerStatus(c["name"], c.get("image", ""), ContainerPhase.RUNNING, started_at=T0)
        for c in pod.get("spec", {}).get("containers", [])
    )
    return ProviderPodStatus(PodPhase.RUNNING, containers, pod_ip=ip, start_time=T0)


class FakeProvider:
    """A provider in memory: pods by UID, each tagged with the node that owns it.

    ``errors[method]`` is raised by every call of ``method`` until removed; a method in ``hang``
    never returns (until cancelled). ``calls`` counts calls by method; ``created``, ``updated`` and
    ``deleted`` list the UIDs asked for, in order, failed calls included.
    """

    name: ClassVar[str] = "fake"

    def __init__(self, node_name: str) -> None:
        self.node_name = node_name
        self.pods: dict[str, tuple[str, PodRef, ProviderPodStatus]] = {}  # uid -> (node, ref, status)
        self.prepared: dict[str, PreparedPod] = {}  # what create/update received, by uid
        self.calls: collections.Counter[str] = collections.Counter()
        self.created: list[str] = []
        self.updated: list[str] = []
        self.deleted: list[str] = []
        self.errors: dict[str, BaseException] = {}
        self.hang: set[str] = set()
        self._ips = itertools.count(2)

    async def _enter(self, method: str) -> None:
        self.calls[method] += 1
        if method in self.hang:
            await asyncio.Event().wait()  # until cancelled (a timeout)
        error = self.errors.get(method)
        if error is not None:
            raise error

    # -- test helpers ------------------------------------------------------------------------------
    def run(
        self, pod: Mapping[str, Any], *, node: str | None = None, status: ProviderPodStatus | None = None
    ) -> ProviderPodStatus:
        """The backend runs ``pod`` already (created before a restart, or by another node)."""
        ref = PodRef.of(pod)
        status = status or running_status(pod, self.next_ip())
        self.pods[ref.uid] = (node or self.node_name, ref, status)
        return status

    def next_ip(self) -> str:
        return f"10.1.0.{next(self._ips)}"

    def status_of(self, uid: str) -> ProviderPodStatus:
        return self.pods[uid][2]

    def set_status(self, uid: str, status: ProviderPodStatus) -> None:
        node, ref, _ = self.pods[uid]
        self.pods[uid] = (node, ref, status)

    def lose(self, uid: str) -> None:
        """The backend lost the pod (a host failure, someone deleted it in the cloud console)."""
        del self.pods[uid]

    # -- Provider ----------------------------------------------------------------------------------
    async def create_pod(self, pod: PreparedPod) -> None:
        self.created.append(pod.ref.uid)  # asked for, whether or not it succeeds
        await self._enter("create_pod")
        ref = pod.ref
        self.prepared[ref.uid] = pod
        if ref.uid not in self.pods:  # idempotent
            self.pods[ref.uid] = (self.node_name, ref, running_status(pod.pod, self.next_ip()))

    async def update_pod(self, pod: PreparedPod) -> None:
        self.updated.append(pod.ref.uid)  # asked for, whether or not it succeeds
        await self._enter("update_pod")
        ref = pod.ref
        self.prepared[ref.uid] = pod
        node, ref, status = self.pods[ref.uid]
        self.pods[ref.uid] = (node, ref, running_status(pod.pod, status.pod_ip or self.next_ip()))

    async def delete_pod(self, ref: PodRef) -> None:
        self.deleted.append(ref.uid)  # asked for, whether or not it succeeds
        await self._enter("delete_pod")
        found = self.pods.get(ref.uid)
        assert found is None or found[0] == self.node_name, f"asked to delete another node's pod {ref}"
        self.pods.pop(ref.uid, None)

    async def get_pod_status(self, ref: PodRef) -> ProviderPodStatus | None:
        await self._enter("get_pod_status")
        found = self.pods.get(ref.uid)
        return found[2] if found is not None and found[0] == self.node_name else None

    async def list_pods(self) -> list[PodRef]:
        await self._enter("list_pods")
        return [ref for node, ref, _ in self.pods.values() if node == self.node_name]

    async def capacity(self) -> Capacity:
        await self._enter("capacity")
        return Capacity()

    async def node_conditions(self) -> list[dict[str, str]]:
        await self._enter("node_conditions")
        return []


class FakeBulkProvider(FakeProvider):
    """A FakeProvider that reports every pod's status in one call (a BulkStatusProvider)."""

    async def get_pod_statuses(self) -> Mapping[str, ProviderPodStatus]:
        await self._enter("get_pod_statuses")
        return {uid: status for uid, (node, _, status) in self.pods.items() if node == self.node_name}

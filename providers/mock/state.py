"""What the mock keeps per pod, and its state file.

With ``state_file`` set, the pods and the call counters are kept in a JSON file: the "cloud" then
outlives the virtual kubelet process, as a real provider's does, and tests can read it. One pod per
line, so it is loaded a pod at a time (decoding 10,000 pods at once took 80 MB that the heap kept
after they were packed), and still one JSON document::

    {"pods": {
    "<uid>": {"ref": {...}, "pod": {...}, "created": "...", "passthrough": {...}, ...},
    ...
    }, "calls": {"create": {uid: n}, "created": {uid: n}, "delete": {uid: n}}, "ips": n,
       "call_counts": {method: n}, "call_log": [[monotonic, method, uid], ...]}

``calls.create`` counts every create call per pod UID, ``calls.created`` only those that created
the pod (1 when it was never created twice), ``calls.delete`` every delete call. ``call_counts``
totals every provider call by method; ``call_log`` holds the last 10,000 calls with the
``time.monotonic()`` of each (``""`` for calls about no pod).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import pathlib
from collections.abc import Iterable
from typing import Any

from vk_operator.provider import Pod, PodRef, pack_pod, unpack_pod

STATE_HEADER = '{"pods": {\n'


def compact(pod: Pod) -> bytes:
    """The pod as the mock keeps it: packed, without status and managedFields.

    ~0.3 KB a pod instead of ~6-20 KB of dicts, which also keeps 10,000 pods' worth of containers
    out of the garbage collector's way.
    """
    meta = pod.get("metadata") or {}
    kept = {k: v for k, v in pod.items() if k != "status"}
    if "managedFields" in meta:
        kept["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
    return pack_pod(kept)


@dataclasses.dataclass(slots=True)
class _MockPod:
    ref: PodRef
    packed_pod: bytes  # see compact; read and written through ``pod``
    created: datetime.datetime
    pod_ip: str
    run_seconds: float | None
    exit_code: int
    start_seconds: float
    stop_seconds: float
    vanish_seconds: float | None = None
    init_seconds: float = 0.0  # each init container's run time
    hang_status: int = 0  # the first N get_pod_status calls hang (from the annotation)
    hang_deletes: int = 0
    # Volume contents as the provider would mount them (text), and names of secret env vars.
    volumes: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    # Volumes of the types the mock declares (volume_types): name -> {"kind": ..., "source": {...}}.
    passthrough: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    secret_env: list[list[str]] = dataclasses.field(default_factory=list)
    # The ownership tag: the node that created it ("" in files written before nodes shared one).
    node: str = ""

    @property
    def pod(self) -> Pod:
        """A fresh copy of the pod (spec and metadata) as created or last updated."""
        decoded: Pod = unpack_pod(self.packed_pod)
        return decoded

    @pod.setter
    def pod(self, pod: Pod) -> None:
        self.packed_pod = compact(pod)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["pod"] = unpack_pod(data.pop("packed_pod"))
        data["created"] = self.created.isoformat()
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> _MockPod:
        known = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in data.items() if k in known}  # newer files may hold more
        return cls(
            **{
                **fields,
                "ref": PodRef(**data["ref"]),
                "packed_pod": compact(data["pod"]),
                "created": datetime.datetime.fromisoformat(data["created"]),
            }
        )


def load(path: pathlib.Path) -> tuple[dict[str, _MockPod], dict[str, Any]]:
    """The pods and the trailer (calls, ips, counts, log) of a state file."""
    pods: dict[str, _MockPod] = {}
    with path.open() as lines:
        first = lines.readline()
        if first != STATE_HEADER:  # not our pod-per-line layout (written by hand): all at once
            data: dict[str, Any] = json.loads(first + lines.read())
            pods = {uid: _MockPod.from_json(p) for uid, p in data.pop("pods").items()}
            return pods, data
        for line in lines:
            if line.startswith("}, "):  # the pods are over: calls and IPs follow
                return pods, json.loads("{" + line[3:])
            uid, _, entry = line.rstrip(",\n").partition(": ")
            pods[json.loads(uid)] = _MockPod.from_json(json.loads(entry))
    raise ValueError(f"{path}: truncated (no calls after the pods)")


def write(path: pathlib.Path, entries: Iterable[tuple[str, str]], trailer: dict[str, Any]) -> None:
    """Replace the file atomically; ``entries`` are (uid, the pod's encoded JSON)."""
    lines = [f"{json.dumps(uid)}: {encoded}" for uid, encoded in entries]
    pods = ",\n".join(lines) + "\n" if lines else ""
    rest = json.dumps(trailer)[1:]  # without its opening brace
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{STATE_HEADER}{pods}}}, {rest}\n")
    tmp.replace(path)

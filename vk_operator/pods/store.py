"""One record per pod (per UID): its latest API object and what we know of it in the provider.

A pod key (namespace, name) nearly always has one record; two while a pod recreated under its
name (a StatefulSet's) overlaps its predecessor still stopping in the provider. The API object is
held packed (``domain.packed``: ~0.4 KB instead of ~11 KB of dicts), without managedFields, and
unpacked on read (a fresh copy each time, so callers may change what they get).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator, Mapping

from vk_operator.domain import packed
from vk_operator.domain.model import Pod, PodRef, ProviderPodStatus
from vk_operator.domain.pod_meta import Key, resource_version


@dataclasses.dataclass(slots=True)  # slots: one per pod, held for its lifetime
class PodRecord:
    ref: PodRef
    # -- the API side (``packed`` None: no API object, e.g. an orphan found in the provider)
    packed: bytes | None = None
    rv: int = 0
    phase: str | None = None
    terminating: bool = False
    written_rv: int = 0  # resourceVersion our last status write produced
    # -- the provider side
    in_provider: bool = False
    stopping: bool = False  # a provider delete is in flight
    attempts: int = 0  # failed attempts since the last success
    first_failure: float | None = None  # monotonic time of the first of them
    fingerprint: bytes | None = None  # spec the provider last saw (domain.pod_meta.spec_fingerprint)
    created_at: float | None = None  # monotonic time create_pod returned (None: adopted)
    polled: bool = False  # a bulk status poll has reported on it since it was created or adopted
    reported: ProviderPodStatus | None = None  # ... what it said (None: the provider lacks it)

    @property
    def key(self) -> Key:
        return self.ref.namespace, self.ref.name

    @property
    def api_pod(self) -> Pod | None:
        if self.packed is None:
            return None
        pod: Pod = packed.unpack(self.packed)
        return pod


class PodStore:
    def __init__(self) -> None:
        self._records: dict[str, PodRecord] = {}  # by UID
        self._uids: dict[Key, tuple[str, ...]] = {}  # by key: orphans found without a scan

    # -- records -----------------------------------------------------------------------------------
    def get(self, uid: str) -> PodRecord | None:
        return self._records.get(uid)

    def ensure(self, ref: PodRef) -> PodRecord:
        record = self._records.get(ref.uid)
        if record is None:
            record = self._records[ref.uid] = PodRecord(ref)
            key = record.key
            self._uids[key] = (*self._uids.get(key, ()), ref.uid)
        return record

    def remove(self, uid: str) -> None:
        record = self._records.pop(uid, None)
        if record is None:
            return
        others = tuple(u for u in self._uids.get(record.key, ()) if u != uid)
        if others:
            self._uids[record.key] = others
        else:
            self._uids.pop(record.key, None)

    def of_key(self, key: Key) -> list[PodRecord]:
        return [self._records[uid] for uid in self._uids.get(key, ())]

    def __iter__(self) -> Iterator[PodRecord]:
        return iter(list(self._records.values()))

    def __len__(self) -> int:
        return len(self._records)

    @property
    def in_provider(self) -> int:
        return sum(1 for r in self._records.values() if r.in_provider)

    # -- API objects -------------------------------------------------------------------------------
    def api_record(self, key: Key) -> PodRecord | None:
        """The record of the key's current API object."""
        for uid in self._uids.get(key, ()):
            record = self._records[uid]
            if record.packed is not None:
                return record
        return None

    def set_api(self, pod: Pod) -> PodRecord:
        """``pod`` is now its key's API object (another UID under that key is then an orphan)."""
        meta = pod["metadata"]
        ref = PodRef.of(pod)
        for other in self.of_key((ref.namespace, ref.name)):
            if other.ref.uid != ref.uid:
                other.packed = None
        record = self.ensure(ref)
        if "managedFields" in meta:
            pod = {**pod, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}
        phase = (pod.get("status") or {}).get("phase")
        record.packed = packed.pack(pod)
        record.rv = resource_version(pod)
        record.phase = sys.intern(phase) if phase else None
        record.terminating = bool(meta.get("deletionTimestamp"))
        return record

    def drop_api(self, key: Key, uid: str) -> None:
        """The API object ``uid`` is gone; the record goes too unless the provider still has it."""
        record = self._records.get(uid)
        if record is None or record.key != key:
            return
        record.packed = None
        if not record.in_provider and not record.stopping:
            self.remove(uid)

    def api_records(self) -> Iterator[PodRecord]:
        return (r for r in list(self._records.values()) if r.packed is not None)

    def api_view(self) -> ApiPods:
        return ApiPods(self)


class ApiPods(Mapping[Key, Pod]):
    """A read-only view of the API objects by key (for the kubelet API's /pods, logs, exec)."""

    def __init__(self, store: PodStore) -> None:
        self._store = store

    def __getitem__(self, key: Key) -> Pod:
        record = self._store.api_record(key)
        pod = record.api_pod if record is not None else None
        if pod is None:
            raise KeyError(key)
        return pod

    def __iter__(self) -> Iterator[Key]:
        return (r.key for r in self._store.api_records())

    def __len__(self) -> int:
        return sum(1 for _ in self._store.api_records())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, tuple) and self._store.api_record(key) is not None

    def phase_counts(self) -> dict[str, int]:
        """Pods by phase without decoding any (for metrics)."""
        counts: dict[str, int] = {}
        for record in self._store.api_records():
            phase = record.phase or "Unknown"
            counts[phase] = counts.get(phase, 0) + 1
        return counts

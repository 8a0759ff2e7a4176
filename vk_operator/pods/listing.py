"""Listing the node's pods from the API and bringing the store up to date with the list.

kopf's watch resumes from its resourceVersion after every disconnect, but a relist after a long
gap (410 Gone) reports no DELETED events for pods removed meanwhile: comparing a list with the
store is what finds them (client-go's informers do the same).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from vk_operator.domain.model import Pod
from vk_operator.domain.pod_meta import Key, pod_key, resource_version
from vk_operator.kube import ApiError, Kube
from vk_operator.kube.client import PARTIAL_METADATA_LIST
from vk_operator.pods.store import PodStore

FULL_LIST_ABOVE = 100  # stale pods found by a metadata list beyond which one full list is cheaper


class PodLister:
    def __init__(self, kube: Kube, node_name: str, namespace: str | None = None) -> None:
        self.kube = kube
        self.node_name = node_name
        self.namespace = namespace

    async def pages(self, metadata_only: bool = False) -> AsyncIterator[tuple[list[Pod], int]]:
        """Our pods, a page at a time (never all decoded at once), with the list's resourceVersion.

        ``metadata_only``: items carry only their metadata (a third of the bytes to decode).
        """
        base = f"/api/v1/namespaces/{self.namespace}/pods" if self.namespace else "/api/v1/pods"
        token = None
        while True:
            query = {"fieldSelector": f"spec.nodeName={self.node_name}", "limit": 500}
            if token:
                query["continue"] = token
            accept = PARTIAL_METADATA_LIST if metadata_only else "application/json"
            page = await self.kube.request("GET", base, query=query, accept=accept)
            yield page.get("items") or [], resource_version(page)  # an empty metadata list: "items": null
            token = page["metadata"].get("continue")
            if not token:
                return

    async def relist(self, store: PodStore, metadata_only: bool) -> list[Key]:
        """Bring ``store`` up to date with a list of the API's pods; returns the keys changed.

        After start-up the store is complete and normally current: list metadata only, then
        fetch the few pods found newer than the store (one full list again if many are).
        """
        listed, list_rv, changed, stale = await self._compare(store, metadata_only)
        if len(stale) > FULL_LIST_ABOVE:
            listed, list_rv, changed, stale = await self._compare(store, metadata_only=False)
        changed += await self._fetch(store, stale)
        for record in store.api_records():
            if record.key not in listed and record.rv <= list_rv:
                store.drop_api(record.key, record.ref.uid)  # deleted while we were not watching
                changed.append(record.key)
        return changed

    async def _compare(
        self, store: PodStore, metadata_only: bool
    ) -> tuple[set[Key], int, list[Key], list[Key]]:
        """(keys listed, list resourceVersion, keys updated in the store, keys newer than the store
        but listed without their object)."""
        listed: set[Key] = set()
        list_rv = 0
        changed: list[Key] = []
        stale: list[Key] = []
        async for items, page_rv in self.pages(metadata_only):
            list_rv = page_rv
            for pod in items:
                key = pod_key(pod)
                listed.add(key)
                known = store.api_record(key)
                if (
                    known is None
                    or known.ref.uid != pod["metadata"]["uid"]
                    or known.rv < resource_version(pod)
                ):
                    if metadata_only:
                        stale.append(key)
                    else:
                        store.set_api(pod)
                        changed.append(key)
        return listed, list_rv, changed, stale

    async def _fetch(self, store: PodStore, keys: list[Key]) -> list[Key]:
        """Read the current objects of ``keys`` into the store; returns the keys updated."""
        updated = []
        for namespace, name in keys:
            try:
                pod = await self.kube.get(f"/api/v1/namespaces/{namespace}/pods/{name}")
            except ApiError as exc:
                if not exc.not_found:
                    raise
                continue  # deleted since the list: the watch or the next relist says so
            known = store.api_record((namespace, name))
            if known is None or known.ref.uid != pod["metadata"]["uid"] or known.rv < resource_version(pod):
                store.set_api(pod)
                updated.append((namespace, name))
        return updated

"""The kopf face of the virtual kubelet: `kopf run -A --standalone vk_operator/handlers.py`.

Pods are handled with ``@kopf.on.event`` only: it writes nothing to the object, so kopf never puts
annotations or finalizers on pods (a finalizer would hang pod deletion whenever we are down).
Embedded use (the `virtual-kubelet` CLI) passes a ready VirtualKubelet in the memo; under `kopf run`
the start-up handler builds one from VK_* environment variables.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from vk_operator import memory
from vk_operator.app import VirtualKubelet
from vk_operator.config import Settings
from vk_operator.kube import Kube, load_configuration

log = logging.getLogger(__name__)


class _NoDiffBase(kopf.DiffBaseStorage):
    """No diff-base: pods have only on.event handlers, which never compare or store one.

    kopf still builds one per watch event (a deep copy of the whole pod) unless told otherwise:
    a quarter of its per-event cost. None (not an empty essence) also skips cleaning it of kopf's
    progress annotations and diffing it, another 3 % of our CPU in a burst.
    """

    def build(self, *, body: Any, extra_fields: Any = None) -> Any:
        return None

    def fetch(self, *, body: Any) -> Any:
        return None

    def store(self, *, body: Any, patch: Any, essence: Any) -> None:
        pass


async def _supports_watch_list(kube: Kube) -> bool:
    """Whether the apiserver streams a watch's initial state (sendInitialEvents; GA in 1.34)."""
    try:
        version = await kube.get("/version")
        major, minor = int(version["major"]), int(str(version["minor"]).rstrip("+"))
    except Exception as exc:  # an unknown server: use the plain list
        log.debug("cannot read the server version: %s", exc)
        return False
    return (major, minor) >= (1, 34)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    vk: VirtualKubelet | None = memo.get("vk")
    if vk is None:  # `kopf run`: configure from the environment
        vk = await VirtualKubelet.from_settings(Settings())
        memo["vk"] = vk
        memo["vk_owned"] = True
    # Server-side filtering: without it kopf lists and watches every pod of the cluster, which
    # the Node authorizer forbids anyway. The key must be the (group/version, plural) tuple.
    settings.watching.field_selectors[("v1", "pods")] = vk.field_selector
    settings.scanning.disabled = True  # no CRD/namespace observation: a kubelet may not list them
    settings.posting.enabled = False  # our own EventRecorder posts the events users expect
    settings.persistence.finalizer = "vk-operator.io/never-used"
    settings.persistence.diffbase_storage = _NoDiffBase()
    # Existing pods arrive as watch events, not in one unpaged LIST: with 10,000 pods that list is
    # a 32 MB response decoded at once into ~200 MB of dicts (the process's high-water mark).
    settings.watching.initial_streaming = await _supports_watch_list(vk.kube)
    # kopf keeps a worker per pod (holding its last event, ~20 KB of dicts) until it has been idle
    # this long: 5 s by default, i.e. thousands of them in a burst. Our handler only enqueues.
    settings.queueing.idle_timeout = 0.5
    memory.tune()
    if memo.get("vk_owned"):
        await vk.start()


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    vk: VirtualKubelet | None = memo.get("vk")
    if vk is not None:
        # Close the kubelet API's connections now: kopf waits 5 s for tasks it finds at exit,
        # and idle keep-alive connections (the apiserver's) would be such tasks.
        await vk.kubelet_api.stop()
    if vk is not None and memo.get("vk_owned"):
        await vk.stop()


@kopf.on.login()
async def login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
    """The same credentials as our own client (kubernetes-asyncio), from the same sources."""
    vk: VirtualKubelet | None = memo.get("vk")
    configuration = vk.kube.configuration if vk else await load_configuration(Settings().kubeconfig)
    token = configuration.api_key.get("BearerToken") or configuration.api_key.get("authorization")
    if token and token.lower().startswith("bearer "):
        token = token[7:]
    return kopf.ConnectionInfo(
        server=str(configuration.host),
        ca_path=configuration.ssl_ca_cert,
        insecure=not configuration.verify_ssl,
        certificate_path=configuration.cert_file,
        private_key_path=configuration.key_file,
        token=token or None,
    )


@kopf.on.event("v1", "pods")
async def pod_event(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    # async on purpose: kopf runs sync handlers in its thread pool, a thread hop per watch event.
    vk: VirtualKubelet | None = memo.get("vk")
    if vk is not None:
        vk.pods.observe(event.get("type"), dict(event["object"]))  # type None: kopf's (re)listing

"""The kopf face of the virtual kubelet: `kopf run -A --standalone vk_operator/handlers.py`.

Pods are handled with ``@kopf.on.event`` only: it writes nothing to the object, so kopf never puts
annotations or finalizers on pods (a finalizer would hang pod deletion whenever we are down).
Embedded use (the `virtual-kubelet` CLI) passes a ready VirtualKubelet in the memo; under `kopf run`
the start-up handler builds one from VK_* environment variables.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import sys
import time
import urllib.parse
import weakref
from collections.abc import AsyncGenerator, Iterator
from typing import Any

import kopf

from vk_operator import memory
from vk_operator.app import ApiOutageLog, VirtualKubelet
from vk_operator.config import Settings
from vk_operator.kube import Kube, load_configuration

log = logging.getLogger(__name__)
_KOPF_DIR = os.path.dirname(kopf.__file__) + os.sep
_KOPF_WATCH_LOGGER = "kopf._cogs.clients.watching"  # kopf's pod watch logs its API retries here
_CLOSE_GENERATORS_SECONDS = 1.0


class _Backoffs:
    """kopf's delays between the attempts of an API request (its pod watch, in practice): endless,
    so the watch never gives up (kopf would log an escalation and start over anyway), and short, so
    the watch resumes within seconds of an outage's end (kopf's default waits up to 21 s)."""

    def __iter__(self) -> Iterator[float]:
        yield from (0.5, 1.0, 2.0, 3.0)
        yield from itertools.repeat(5.0)


class WatchRetryFilter(logging.Filter):
    """kopf's API retries: one WARNING when they start, one INFO when a request succeeds again.

    kopf logs every failed attempt at ERROR with the exception's repr (~25 lines per 75 s outage).
    The attempts in between are DEBUG (dropped unless debugging), and so is the first when the
    outage has been reported already (``outage``: by the node heartbeat, say). A failure after
    ``quiet`` seconds without any starts anew (kopf's first attempt succeeding is not logged)."""

    def __init__(self, debug: bool, quiet: float = 30.0, outage: ApiOutageLog | None = None) -> None:
        super().__init__()
        self.debug = debug
        self.quiet = quiet
        self.outage = outage
        self.failing_since: float | None = None
        self.last_failure = 0.0
        self.failures = 0

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith("Request attempt "):
            return record.levelno >= logging.WARNING or self.debug  # this logger is at DEBUG for us
        now = time.monotonic()
        if " failed" in message:
            new = self.failing_since is None or now - self.last_failure > self.quiet
            self.last_failure = now
            if not new:
                self.failures += 1
                return self._demote(record)
            self.failing_since, self.failures = now, 1
            if self.outage is not None and not self.outage.report():
                return self._demote(record)
            _set(
                record,
                logging.WARNING,
                "API request failing (%s): %s; retrying quietly until it succeeds",
                _what(message),
                _brief(sys.exc_info()[1], message),
            )
            return True
        if " succeeded" in message and self.failing_since is not None:
            _set(
                record,
                logging.INFO,
                "API request succeeds again after %.0f s and %d failed attempts (%s)",
                now - self.failing_since,
                self.failures,
                _what(message),
            )
            self.failing_since = None
            return True
        return self._demote(record)

    def _demote(self, record: logging.LogRecord) -> bool:
        _set(record, logging.DEBUG, record.msg, *record.args if isinstance(record.args, tuple) else ())
        return self.debug


def _set(record: logging.LogRecord, level: int, msg: Any, *args: Any) -> None:
    record.levelno, record.levelname = level, logging.getLevelName(level)
    record.msg, record.args = msg, args


def _what(message: str) -> str:
    """'Request attempt #2/9 failed; will retry: GET https://host/api/v1/pods?watch=true -> ...'
    -> 'GET /api/v1/pods'."""
    what = message.split(": ", 1)[-1].split(" -> ", 1)[0].split()
    if len(what) >= 2:
        return f"{what[0]} {urllib.parse.urlsplit(what[1]).path}"
    return " ".join(what)


def _brief(error: BaseException | None, message: str) -> str:
    text = f"{type(error).__name__}: {error}" if error is not None else message.rsplit(" -> ", 1)[-1]
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:297] + "..."


def quiet_watch_retries(outage: ApiOutageLog | None = None) -> None:
    """Install ``WatchRetryFilter`` on kopf's watch logger (once)."""
    logger = logging.getLogger(_KOPF_WATCH_LOGGER)
    for installed in logger.filters:
        if isinstance(installed, WatchRetryFilter):
            installed.outage = outage
            return
    logger.addFilter(WatchRetryFilter(debug=logger.isEnabledFor(logging.DEBUG), outage=outage))
    logger.setLevel(logging.DEBUG)  # its "succeeded again" record is DEBUG: the filter decides


class _KopfGenerators:
    """kopf's async generators, in the order they started, to be closed outer first at cleanup.

    kopf cancels its watchers wherever they are; one cancelled in the body of its ``async for``
    leaves the watch generator suspended, and with it the pause-waiter task the generator's context
    opened. kopf then waits 5 s for that task ("hung") and at loop exit asyncio closes every
    generator at once, an inner context manager before the outer generator using it: "RuntimeError:
    generator didn't stop after athrow()" with a traceback. Closed in order, each finishes cleanly.
    """

    def __init__(self) -> None:
        self._order = itertools.count()
        self._started: weakref.WeakKeyDictionary[AsyncGenerator[Any, Any], int] = weakref.WeakKeyDictionary()
        self._installed = False

    def install(self) -> None:
        if self._installed:
            return
        self._installed = True
        hooks = sys.get_asyncgen_hooks()
        previous = hooks.firstiter

        def firstiter(agen: AsyncGenerator[Any, Any]) -> None:
            code = getattr(agen, "ag_code", None)
            if code is not None and code.co_filename.startswith(_KOPF_DIR):
                self._started[agen] = next(self._order)
            if previous is not None:
                previous(agen)

        sys.set_asyncgen_hooks(firstiter=firstiter, finalizer=hooks.finalizer)

    async def close(self) -> None:
        """Close what kopf left open (call when kopf's tasks are done)."""
        pending = sorted(self._started.items(), key=lambda item: item[1])
        self._started.clear()
        left = [agen for agen, _ in pending if getattr(agen, "ag_frame", None) is not None]
        if left:
            log.debug("closing %d async generators kopf left open", len(left))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(_CLOSE_GENERATORS_SECONDS):
                for agen in left:
                    try:
                        await agen.aclose()
                    except Exception as exc:  # running in a task still alive: not ours to close
                        log.debug("cannot close %r: %s", agen, exc)


_kopf_generators = _KopfGenerators()


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
    # At exit kopf gives its per-pod workers this long to drain their events; we take no new work
    # by then anyway (default 2 s).
    settings.queueing.exit_timeout = 0.5
    # An apiserver outage: the watch retries every few seconds, quietly, for as long as it lasts.
    settings.networking.error_backoffs = _Backoffs()
    quiet_watch_retries(vk.outage)
    _kopf_generators.install()
    memory.tune()
    if memo.get("vk_owned"):
        await vk.start()


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    # kopf's other tasks are done: what they left open is closed now, and cleanly.
    await _kopf_generators.close()
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

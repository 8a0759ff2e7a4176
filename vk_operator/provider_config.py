"""Provider configuration from a file or a ConfigMap, validated by the provider's pydantic model.

`--provider-config configmap:NAMESPACE/NAME` reads the key ``config.yaml`` (or ``config.json`` /
``config.toml``) and keeps watching it: a valid change is applied without a restart where the
provider allows it; an invalid one is refused with a Warning event on the ConfigMap and a log line,
and the old configuration keeps serving.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from vk_operator.config import ConfigError, load_provider_config, parse_config_text, validate_provider_config
from vk_operator.kube import ApiError, Kube
from vk_operator.pods.events import EventRecorder
from vk_operator.provider import ProviderFactory

log = logging.getLogger(__name__)
CONFIGMAP_PREFIX = "configmap:"
CONFIG_KEYS = ("config.yaml", "config.yml", "config.json", "config.toml")


@dataclasses.dataclass(frozen=True)
class ConfigMapRef:
    namespace: str
    name: str

    @classmethod
    def parse(cls, source: str | None) -> ConfigMapRef | None:
        if not source or not source.startswith(CONFIGMAP_PREFIX):
            return None
        namespace, _, name = source[len(CONFIGMAP_PREFIX) :].partition("/")
        if not namespace or not name:
            raise ConfigError(f"--provider-config {source}: expected configmap:NAMESPACE/NAME")
        return cls(namespace, name)

    @property
    def path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/configmaps/{self.name}"

    def __str__(self) -> str:
        return f"configmap {self.namespace}/{self.name}"


def config_text(ref: ConfigMapRef, configmap: dict[str, Any]) -> tuple[str, str]:
    """(text, key) of the provider section in the ConfigMap."""
    data = configmap.get("data") or {}
    for key in CONFIG_KEYS:
        if key in data:
            return data[key], key
    raise ConfigError(f"{ref}: no key {' or '.join(CONFIG_KEYS)}")


def parse_configmap(factory: ProviderFactory[Any], ref: ConfigMapRef, configmap: dict[str, Any]) -> Any:
    text, key = config_text(ref, configmap)
    source = f"{ref} key {key}"
    return validate_provider_config(factory, parse_config_text(text, key), source)


async def load(
    factory: ProviderFactory[Any], source: str | None, kube: Kube
) -> tuple[Any, dict[str, Any] | None]:
    """The validated config and, for a ConfigMap source, the ConfigMap it came from."""
    ref = ConfigMapRef.parse(source)
    if ref is None:
        return load_provider_config(factory, source), None
    try:
        configmap: dict[str, Any] = await kube.get(ref.path)
    except ApiError as exc:
        raise ConfigError(
            f"--provider-config {source}: cannot read {ref}: {exc.status} {exc.reason}"
        ) from exc
    return parse_configmap(factory, ref, configmap), configmap


class ConfigMapWatcher:
    """Follows one ConfigMap; hands each valid new config to ``apply``."""

    def __init__(
        self,
        kube: Kube,
        factory: ProviderFactory[Any],
        ref: ConfigMapRef,
        current: dict[str, Any],
        apply: Callable[[Any], Awaitable[None]],
        events: EventRecorder,
    ) -> None:
        self.kube = kube
        self.factory = factory
        self.ref = ref
        self.apply = apply
        self.events = events
        self._seen = self._fingerprint(current)
        self._resource_version = current["metadata"]["resourceVersion"]

    @staticmethod
    def _fingerprint(configmap: dict[str, Any]) -> Any:
        return tuple(sorted((configmap.get("data") or {}).items()))

    async def _consider(self, configmap: dict[str, Any]) -> None:
        self._resource_version = configmap["metadata"]["resourceVersion"]
        fingerprint = self._fingerprint(configmap)
        if fingerprint == self._seen:
            return
        self._seen = fingerprint
        obj = {"apiVersion": "v1", "kind": "ConfigMap", **configmap}
        try:
            config = parse_configmap(self.factory, self.ref, configmap)
        except ConfigError as exc:
            log.warning("refused the new provider config, the old one keeps serving: %s", exc)
            self.events.record(
                obj, "ProviderConfigInvalid", f"refused; the old config keeps serving: {exc}", warning=True
            )
            return
        try:
            await self.apply(config)
        except Exception as exc:
            log.warning("cannot apply the new provider config, the old one keeps serving: %s", exc)
            self.events.record(obj, "ProviderConfigNotApplied", str(exc), warning=True)
            return
        log.info("applied the new provider config from %s", self.ref)
        self.events.record(obj, "ProviderConfigApplied", "applied without restart")

    async def run(self) -> None:
        collection = f"/api/v1/namespaces/{self.ref.namespace}/configmaps"
        while True:
            try:
                async for event in self.kube.watch(
                    collection,
                    fieldSelector=f"metadata.name={self.ref.name}",
                    resourceVersion=self._resource_version,
                    timeoutSeconds=300,
                ):
                    if event["type"] in ("ADDED", "MODIFIED"):
                        await self._consider(event["object"])
                    elif event["type"] == "BOOKMARK":
                        self._resource_version = event["object"]["metadata"]["resourceVersion"]
                    elif event["type"] == "DELETED":
                        log.warning("%s was deleted; the current provider config keeps serving", self.ref)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # 410 Gone, a dropped connection...: relist, then watch again
                if isinstance(exc, ApiError) and exc.status in (401, 403):
                    log.warning("cannot watch %s (changes are noticed late): %s", self.ref, exc)
                else:
                    log.debug("watch of %s ended: %s", self.ref, exc)
                await asyncio.sleep(1)
                try:
                    await self._consider(await self.kube.get(self.ref.path))
                except ApiError as get_exc:
                    log.warning("cannot read %s: %s", self.ref, get_exc)

"""Settings: every flag also readable from the environment (VK_ prefix), validated by pydantic."""

from __future__ import annotations

import enum
import importlib.metadata
import json
import pathlib
from typing import Any

import pydantic
import pydantic_settings
import yaml

from vk_operator.guard import CallTimeouts
from vk_operator.provider import ProviderFactory

ENTRY_POINT_GROUP = "vk_operator.providers"


class OperatingSystem(enum.StrEnum):
    LINUX = "Linux"
    WINDOWS = "Windows"

    @classmethod
    def _missing_(cls, value: object) -> OperatingSystem | None:
        # `--os linux` works as well as `--os Linux`.
        return next((m for m in cls if isinstance(value, str) and m.value.lower() == value.lower()), None)


class Settings(pydantic_settings.BaseSettings):
    model_config = pydantic_settings.SettingsConfigDict(env_prefix="VK_", extra="forbid")

    provider: str = "mock"
    provider_config: str | None = None  # a file (YAML/JSON/TOML)
    nodename: str = "virtual-kubelet"
    kubeconfig: str | None = None
    namespace: str | None = None  # watch one namespace; None: all
    os: OperatingSystem = OperatingSystem.LINUX
    taint: str = "virtual-kubelet.io/provider"  # empty: no taint
    kubelet_port: int = pydantic.Field(10250, ge=0, le=65535)
    node_ip: str = "127.0.0.1"
    log_level: str = "INFO"
    client_qps: float = pydantic.Field(50.0, ge=0)
    client_burst: int = pydantic.Field(100, ge=1)
    event_qps: float = pydantic.Field(50.0, ge=0)  # the kubelet's defaults; Events have their own budget
    event_burst: int = pydantic.Field(100, ge=1)
    pod_workers: int = pydantic.Field(16, ge=1)
    node_status_interval: float = pydantic.Field(60.0, gt=0)
    lease_duration: int = pydantic.Field(40, ge=1)
    lease_renew_interval: float = pydantic.Field(10.0, gt=0)
    resync_interval: float = pydantic.Field(60.0, gt=0)  # provider vs. our pods
    relist_interval: float = pydantic.Field(600.0, gt=0)  # ... and our pods vs. a list from the API
    remove_node_on_exit: bool = False
    # A pod the provider keeps refusing (transient errors) fails after this long; permanent errors at once.
    pod_create_deadline: float = pydantic.Field(600.0, gt=0)
    retry_initial: float = pydantic.Field(0.5, gt=0)
    retry_cap: float = pydantic.Field(30.0, gt=0)
    # Provider calls: each kind is cut after this many seconds (a timed-out call is transient).
    provider_timeout_create: float = pydantic.Field(120.0, gt=0)
    provider_timeout_update: float = pydantic.Field(60.0, gt=0)
    provider_timeout_delete: float = pydantic.Field(120.0, gt=0)
    provider_timeout_status: float = pydantic.Field(30.0, gt=0)
    provider_timeout_list: float = pydantic.Field(60.0, gt=0)
    provider_timeout_other: float = pydantic.Field(30.0, gt=0)
    # Status of providers that cannot push it: per pod every interval, or (bulk) fast while pods are
    # in transition and slow when all are steady, at most budget calls a minute.
    status_poll_interval: float = pydantic.Field(5.0, gt=0)
    status_poll_fast: float = pydantic.Field(2.0, gt=0)
    status_poll_slow: float = pydantic.Field(30.0, gt=0)
    status_poll_budget: float = pydantic.Field(60.0, gt=0)

    # -- kubelet API (HTTPS) and operational endpoints -------------------------------------------
    address: str = "0.0.0.0"  # where the kubelet API listens
    tls_cert_file: str | None = None  # serving certificate (PEM); re-read when it changes
    tls_key_file: str | None = None
    tls_secret: str | None = None  # NAMESPACE/NAME of a kubernetes.io/tls Secret
    tls_reload_interval: float = pydantic.Field(10.0, gt=0)  # seconds between rotation checks
    serving_cert_csr: bool = False  # request a kubernetes.io/kubelet-serving certificate
    serving_cert_self_approve: bool = False  # approve that CSR ourselves (needs RBAC)
    client_ca_file: str | None = None  # default: the CA of the kubeconfig's cluster
    anonymous_auth: bool = False
    authentication_token_webhook_cache_ttl: float = pydantic.Field(120.0, ge=0)
    authorization_webhook_cache_authorized_ttl: float = pydantic.Field(300.0, ge=0)
    authorization_webhook_cache_unauthorized_ttl: float = pydantic.Field(30.0, ge=0)
    metrics_port: int = pydantic.Field(10255, ge=0, le=65535)  # /metrics, /healthz, /readyz; 0: off
    # Connections to the kubelet API (and the metrics port): a cap (at it, the oldest connection without an
    # authenticated request makes room), deadlines for a request head, a keep-alive idle timeout.
    kubelet_api_max_connections: int = pydantic.Field(1000, ge=1)
    kubelet_api_first_request_timeout: float = pydantic.Field(10.0, gt=0)  # TLS handshake + first head
    kubelet_api_header_timeout: float = pydantic.Field(10.0, gt=0)  # a later request's head
    kubelet_api_idle_timeout: float = pydantic.Field(120.0, gt=0)  # between requests

    @property
    def call_timeouts(self) -> CallTimeouts:
        return CallTimeouts(
            create=self.provider_timeout_create,
            update=self.provider_timeout_update,
            delete=self.provider_timeout_delete,
            status=self.provider_timeout_status,
            list=self.provider_timeout_list,
            other=self.provider_timeout_other,
        )

    @pydantic.model_validator(mode="after")
    def _tls_sources(self) -> Settings:
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ValueError("--tls-cert-file and --tls-key-file must be given together")
        if self.tls_secret is not None and (
            self.tls_secret.count("/") != 1 or not all(self.tls_secret.split("/"))
        ):
            raise ValueError(f"--tls-secret {self.tls_secret!r}: expected NAMESPACE/NAME")
        if self.serving_cert_csr and (self.tls_cert_file or self.tls_secret):
            raise ValueError("--serving-cert-csr replaces --tls-cert-file/--tls-secret: choose one")
        if self.tls_cert_file and self.tls_secret:
            raise ValueError("--tls-cert-file and --tls-secret exclude each other: choose one")
        if self.serving_cert_self_approve and not self.serving_cert_csr:
            raise ValueError("--serving-cert-self-approve needs --serving-cert-csr")
        return self

    @pydantic.field_validator("nodename")
    @classmethod
    def _dns_name(cls, value: str) -> str:
        import re

        if not re.fullmatch(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?", value):
            raise ValueError("must be a lowercase DNS subdomain (a-z, 0-9, '-', '.')")
        return value

    @pydantic.field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        upper = value.upper()
        if upper not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR")
        return upper


class ConfigError(Exception):
    """Configuration is invalid; the message names every wrong field."""


class ProviderStartError(Exception):
    """The provider's start() failed (credentials, pre-flight checks): one line, nothing registered."""


def provider_factories() -> dict[str, ProviderFactory[Any]]:
    """Every installed provider, loaded (the chart's schema is made from all of them)."""
    return {entry.name: entry.load() for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def load_provider_factory(name: str) -> ProviderFactory[Any]:
    """The provider ``name``, and no other: each imports its own cloud SDK (tens of MB resident), and
    one whose optional extra is not installed must not stop another from running."""
    entries = {entry.name: entry for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}
    entry = entries.get(name)
    if entry is None:
        known = ", ".join(sorted(entries)) or "none"
        raise ConfigError(f"unknown provider {name!r} (installed: {known})")
    try:
        factory: ProviderFactory[Any] = entry.load()
    except ImportError as exc:
        raise ConfigError(
            f"provider {name!r} cannot be imported ({exc}): is the extra it needs installed "
            "(pip install 'vk-operator[azure]' for aci and azurebatch, 'vk-operator[aws]' for fargate)?"
        ) from exc
    return factory


def parse_config_text(text: str, source: str) -> dict[str, Any]:
    """YAML (a superset of JSON) or TOML, chosen by extension."""
    try:
        if source.endswith(".toml"):
            import tomllib

            data: Any = tomllib.loads(text)
        elif source.endswith(".json"):
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except Exception as exc:  # every parser has its own error type
        raise ConfigError(f"{source}: cannot parse: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level")
    return data


def format_validation_error(source: str, exc: pydantic.ValidationError) -> str:
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()
    )
    return f"{source}: {problems}"


def validate_provider_config(factory: ProviderFactory[Any], data: dict[str, Any], source: str) -> Any:
    try:
        return factory.config_model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from exc


def load_provider_config(factory: ProviderFactory[Any], path: str | None) -> Any:
    if path is None:
        return validate_provider_config(factory, {}, "(defaults)")
    file = pathlib.Path(path)
    try:
        text = file.read_text()
    except OSError as exc:
        raise ConfigError(f"--provider-config {path}: {exc.strerror}") from exc
    return validate_provider_config(factory, parse_config_text(text, path), path)

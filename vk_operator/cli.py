"""`virtual-kubelet [run] --provider ... | virtual-kubelet version`.

Flags keep the original virtual-kubelet names; each is also read from the environment (VK_NODENAME,
VK_PROVIDER, ...). Any configuration problem is one line on stderr and exit code 2, before anything
is registered in the cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any

import pydantic

from vk_operator import __version__
from vk_operator.config import ConfigError, ProviderStartError, Settings, format_validation_error
from vk_operator.kube import ApiError

EXIT_CONFIG = 2
log = logging.getLogger("vk_operator.cli")

# flag -> Settings field; flags left out are taken from the environment or defaults.
_FLAGS: dict[str, tuple[str, dict[str, Any]]] = {
    "--provider": ("provider", {"help": "provider name (default: mock)"}),
    "--provider-config": ("provider_config", {"help": "provider config file (YAML/JSON/TOML)"}),
    "--nodename": ("nodename", {"help": "node name (default: virtual-kubelet)"}),
    "--kubeconfig": ("kubeconfig", {"help": "kubeconfig (default: $KUBECONFIG, ~/.kube/config, in-cluster)"}),
    "--namespace": ("namespace", {"help": "only watch pods of this namespace (default: all)"}),
    "--os": ("os", {"help": "node operating system: Linux or Windows"}),
    "--taint": ("taint", {"help": "taint key for the node; empty disables the taint"}),
    "--kubelet-port": ("kubelet_port", {"type": int, "help": "kubelet API port (default 10250)"}),
    "--node-ip": ("node_ip", {"help": "InternalIP the node advertises"}),
    "--log-level": ("log_level", {"help": "DEBUG, INFO, WARNING or ERROR"}),
    "--client-qps": ("client_qps", {"type": float, "help": "API client queries per second"}),
    "--client-burst": ("client_burst", {"type": int, "help": "API client burst"}),
    "--event-qps": ("event_qps", {"type": float, "help": "Events per second (default 50; 0: no limit)"}),
    "--event-burst": ("event_burst", {"type": int, "help": "Events posted in a burst (default 100)"}),
    "--pod-workers": ("pod_workers", {"type": int, "help": "concurrent pod reconcilers"}),
    "--resync-interval": (
        "resync_interval",
        {"type": float, "help": "seconds between comparisons of the provider's pods with ours (default 60)"},
    ),
    "--relist-interval": (
        "relist_interval",
        {"type": float, "help": "seconds between lists of the node's pods from the API server (default 600)"},
    ),
    "--node-status-interval": ("node_status_interval", {"type": float}),
    "--lease-renew-interval": ("lease_renew_interval", {"type": float}),
    "--pod-create-deadline": (
        "pod_create_deadline",
        {"type": float, "help": "seconds before a pod that cannot be created fails"},
    ),
    "--retry-initial": (
        "retry_initial",
        {"type": float, "help": "first retry delay (seconds), doubled each time"},
    ),
    "--retry-cap": ("retry_cap", {"type": float, "help": "longest retry delay (seconds)"}),
    **{
        f"--provider-timeout-{kind}": (
            f"provider_timeout_{kind}",
            {"type": float, "help": f"seconds before a provider {kind} call is cut and retried"},
        )
        for kind in ("create", "update", "delete", "status", "list", "other")
    },
    "--status-poll-interval": (
        "status_poll_interval",
        {"type": float, "help": "seconds between status polls of each pod (providers without push)"},
    ),
    "--status-poll-fast": (
        "status_poll_fast",
        {"type": float, "help": "seconds between bulk status polls while pods are in transition (2)"},
    ),
    "--status-poll-slow": (
        "status_poll_slow",
        {"type": float, "help": "seconds between bulk status polls when all pods are steady (30)"},
    ),
    "--status-poll-budget": (
        "status_poll_budget",
        {"type": float, "help": "most bulk status polls a minute (60)"},
    ),
}


# The kubelet API (HTTPS) and the operational endpoints; names follow the kubelet's flags.
_KUBELET_API_FLAGS: dict[str, tuple[str, dict[str, Any]]] = {
    "--address": ("address", {"help": "address the kubelet API listens on (default 0.0.0.0)"}),
    "--tls-cert-file": ("tls_cert_file", {"help": "serving certificate (PEM), reloaded when it changes"}),
    "--tls-key-file": ("tls_key_file", {"help": "serving certificate key (PEM)"}),
    "--tls-secret": ("tls_secret", {"help": "NAMESPACE/NAME of a kubernetes.io/tls Secret to serve"}),
    "--tls-reload-interval": ("tls_reload_interval", {"type": float, "help": "seconds between checks"}),
    "--client-ca-file": ("client_ca_file", {"help": "CA for client certificates (default: the cluster CA)"}),
    "--authentication-token-webhook-cache-ttl": ("authentication_token_webhook_cache_ttl", {"type": float}),
    "--authorization-webhook-cache-authorized-ttl": (
        "authorization_webhook_cache_authorized_ttl",
        {"type": float},
    ),
    "--authorization-webhook-cache-unauthorized-ttl": (
        "authorization_webhook_cache_unauthorized_ttl",
        {"type": float},
    ),
    "--metrics-port": (
        "metrics_port",
        {"type": int, "help": "plain-HTTP /metrics, /healthz, /readyz; 0: off"},
    ),
    "--kubelet-api-max-connections": (
        "kubelet_api_max_connections",
        {
            "type": int,
            "help": "most connections open at once (default 1000); at the cap the oldest "
            "one without an authenticated request is closed",
        },
    ),
    "--kubelet-api-first-request-timeout": (
        "kubelet_api_first_request_timeout",
        {"type": float, "help": "seconds from accept to the TLS handshake and first request head (10)"},
    ),
    "--kubelet-api-header-timeout": (
        "kubelet_api_header_timeout",
        {"type": float, "help": "seconds from a later request's first byte to its full head (10)"},
    ),
    "--kubelet-api-idle-timeout": (
        "kubelet_api_idle_timeout",
        {"type": float, "help": "seconds a keep-alive connection may idle between requests (120)"},
    ),
}
_KUBELET_API_SWITCHES = {
    "--anonymous-auth": ("anonymous_auth", "serve anonymous requests (still authorized)"),
    "--serving-cert-csr": ("serving_cert_csr", "request the serving certificate with a kubelet-serving CSR"),
    "--serving-cert-self-approve": ("serving_cert_self_approve", "approve that CSR ourselves (needs RBAC)"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        print(f"virtual-kubelet: {message}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="virtual-kubelet", description="A Virtual Kubelet in Python")
    parser.add_argument("command", nargs="?", choices=("run", "version"), default="run")
    for flag, (field, options) in {**_FLAGS, **_KUBELET_API_FLAGS}.items():
        parser.add_argument(flag, dest=field, default=None, **options)
    for flag, (field, help_text) in _KUBELET_API_SWITCHES.items():
        parser.add_argument(flag, dest=field, action="store_const", const=True, default=None, help=help_text)
    parser.add_argument(
        "--remove-node-on-exit",
        dest="remove_node_on_exit",
        action="store_const",
        const=True,
        default=None,
        help="delete the Node when the process stops",
    )
    return parser


def parse_settings(argv: list[str] | None) -> tuple[str, Settings]:
    args = build_parser().parse_args(argv)
    given = {k: v for k, v in vars(args).items() if k != "command" and v is not None}
    try:
        return args.command, Settings(**given)
    except pydantic.ValidationError as exc:
        raise ConfigError(format_validation_error("configuration", exc)) from exc


def _configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    # kopf's own INFO chatter (handler succeeded, ...) would drown our logs.
    logging.getLogger("kopf").setLevel(logging.getLevelName(level) if level == "DEBUG" else logging.WARNING)


async def _run(settings: Settings) -> int:
    import kopf

    from vk_operator import handlers  # noqa: F401  (registers the kopf handlers)
    from vk_operator.app import VirtualKubelet

    vk = await VirtualKubelet.from_settings(settings)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()  # kopf's stop flag

    def at_once(signum: int, _frame: object) -> None:
        # Python runs this between two bytecodes, wherever the loop is (a busy loop would see the
        # signal only some milliseconds later): flags only. The loop then runs ``on_signal``.
        vk.refuse_new_work()

    def on_signal(sig: signal.Signals) -> None:
        # No new pod taken, no new provider create or update; kopf then winds down.
        if not stop.is_set():
            log.info("%s received: stopping", sig.name)
        vk.begin_shutdown()
        stop.set()

    def take_signals() -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)  # the loop's wake-up fd: on_signal
            signal.signal(sig, at_once)  # in place of the loop's no-op Python-level handler

    take_signals()
    try:
        await vk.start()
    except Exception:
        await vk.stop()
        raise
    try:
        existing = asyncio.all_tasks()
        tasks = await kopf.spawn_tasks(
            identity=_kopf_identity(settings.nodename),
            clusterwide=settings.namespace is None,
            namespaces=[settings.namespace] if settings.namespace else (),
            standalone=True,
            memo=kopf.Memo(vk=vk),
            stop_flag=stop,
        )
        take_signals()  # kopf has just put its own handlers in place (they only stop kopf)
        await kopf.run_tasks(tasks, ignored=existing)
    finally:
        await vk.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    return 0


def _kopf_identity(node_name: str) -> Any:
    """Who we are to kopf: the node, the host (the pod, in a cluster) and the process.

    Explicit because kopf's default asks ``getpass.getuser()``, which raises in an image without a
    passwd entry for the container's UID (the chart's 65532) and crash-looped the pod.
    """
    return f"{node_name}@{socket.gethostname()}/{os.getpid()}"  # kopf's Identity is a NewType of str


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed, as ``kopf run`` does: both entry points run on the same kind of loop."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def main(argv: list[str] | None = None) -> int:
    try:
        command, settings = parse_settings(argv)
        if command == "version":
            print(f"virtual-kubelet (vk-operator) {__version__}")
            return 0
        _configure_logging(settings.log_level)
        # Load the provider config now, so a bad one fails before we touch the cluster.
        from vk_operator.config import load_provider_config, load_provider_factory
        from vk_operator.provider_config import ConfigMapRef

        # (A ConfigMap source is read once connected, still before anything is registered.)
        if ConfigMapRef.parse(settings.provider_config) is None:
            load_provider_config(load_provider_factory(settings.provider), settings.provider_config)
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            return runner.run(_run(settings))
    except ConfigError as exc:
        print(f"virtual-kubelet: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except FileNotFoundError as exc:
        print(f"virtual-kubelet: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except ApiError as exc:
        print(f"virtual-kubelet: cannot start: {exc}", file=sys.stderr)
        return 1
    except ProviderStartError as exc:
        print(f"virtual-kubelet: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

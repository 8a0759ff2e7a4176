"""A pod made ready for a provider: env resolved to plain values, volume contents attached."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping

from vk_operator.domain import env as env_domain
from vk_operator.domain import registry
from vk_operator.domain import volumes as volume_domain
from vk_operator.domain.model import Pod, PodRef
from vk_operator.domain.registry import RegistryCredential


@dataclasses.dataclass(frozen=True)
class PreparedPod:
    """What providers receive on create and update.

    ``pod`` is the API object with every container's ``env`` replaced by resolved name/value pairs
    (no ``valueFrom``, no ``envFrom``) and ``command``/``args`` ``$(VAR)``-expanded, like the kubelet
    hands them to the runtime. ``secret_env`` names the variables a provider must treat as secret.
    ``registry_credentials``: the logins of the pod's imagePullSecrets (missing or malformed ones
    are a Warning Event, FailedToRetrieveImagePullSecret, and the pod goes on, as on a kubelet).
    """

    pod: Pod
    volumes: Mapping[str, volume_domain.ResolvedVolume]
    secret_env: frozenset[tuple[str, str]]
    # The logins of the pod's imagePullSecrets, one per registry server (secret: never log them).
    registry_credentials: tuple[RegistryCredential, ...] = ()

    @property
    def ref(self) -> PodRef:
        return PodRef.of(self.pod)


@dataclasses.dataclass(frozen=True)
class Preparation:
    prepared: PreparedPod | None  # None when ``fatal`` is set
    events: tuple[env_domain.EnvEvent, ...]
    fatal: env_domain.EnvEvent | None


# Problems that no retry can fix: the pod fails at once instead of waiting for its references.
PERMANENT_REASONS = frozenset(
    {
        volume_domain.UNSUPPORTED_VOLUME,
        env_domain.UNSUPPORTED_FIELD_PATH,
        env_domain.UNSUPPORTED_ENV_SOURCE,
        env_domain.INVALID_RESOURCE_FIELD_REF,
    }
)

# Problems with what the pod references, fixed by someone creating or correcting it: a missing
# mandatory ConfigMap/Secret or key, one that cannot be read, a volume whose source is missing
# (FailedMount). The kubelet keeps such a pod waiting (CreateContainerConfigError, or
# ContainerCreating with FailedMount events) until the reference is there, however long that takes:
# they are retried with capped backoff and never fail the pod, unlike provider failures, which
# fail it past the deadline. (PodIPNotAvailable/HostIPNotAvailable are the provider's or the node's,
# not the pod's: they keep the deadline.)
WAITING_REASONS = frozenset(
    {
        env_domain.MANDATORY_CONFIGMAP_NOT_FOUND,
        env_domain.MANDATORY_CONFIGMAP_KEY_NOT_FOUND,
        env_domain.FAILED_TO_READ_MANDATORY_CONFIGMAP,
        env_domain.MANDATORY_SECRET_NOT_FOUND,
        env_domain.MANDATORY_SECRET_KEY_NOT_FOUND,
        env_domain.FAILED_TO_READ_MANDATORY_SECRET,
        volume_domain.FAILED_MOUNT,
    }
)


FAILED_TO_RETRIEVE_IMAGE_PULL_SECRET = "FailedToRetrieveImagePullSecret"  # the kubelet's reason


def referenced_secrets(pod: Pod) -> set[str]:
    """Every Secret preparing the pod reads: env, volumes, volume credentials, imagePullSecrets."""
    return (
        env_domain.referenced_secrets(pod)
        | volume_domain.credential_secrets(pod)
        | set(registry.image_pull_secret_names(pod))
    )


def prepare(pod: Pod, sources: env_domain.Sources, volume_types: frozenset[str] = frozenset()) -> Preparation:
    """``volume_types``: volume types the provider declares it mounts itself (passed through)."""
    env = env_domain.resolve_env(pod, sources)
    if env.fatal:
        return Preparation(None, env.events, env.fatal)
    volumes = volume_domain.resolve_volumes(pod, sources, volume_types)
    events = env.events + volumes.events
    if volumes.fatal:
        return Preparation(None, events, volumes.fatal)
    resolved = copy.deepcopy(pod)
    spec = resolved.get("spec", {})
    for kind in ("initContainers", "containers"):
        for container in spec.get(kind) or []:
            variables = env.containers.get(container["name"], [])
            command, args = env_domain.expand_command(container, variables)
            container["env"] = variables
            container.pop("envFrom", None)
            if "command" in container:
                container["command"] = command
            if "args" in container:
                container["args"] = args
    credentials, problems = registry.registry_credentials(
        registry.image_pull_secret_names(pod), sources.secrets
    )
    events += tuple(
        env_domain.EnvEvent(
            FAILED_TO_RETRIEVE_IMAGE_PULL_SECRET,
            f"Unable to retrieve some image pull secrets ({problem});"
            " attempting to pull the image may not succeed.",
            True,
        )
        for problem in problems
    )
    return Preparation(PreparedPod(resolved, volumes.volumes, env.secret_vars, credentials), events, None)

"""Image registry credentials from a pod's imagePullSecrets, as the kubelet reads them.

Secrets of type ``kubernetes.io/dockerconfigjson`` (``.dockerconfigjson``: ``{"auths": {...}}``)
and ``kubernetes.io/dockercfg`` (``.dockercfg``: the map itself). An entry gives ``username`` and
``password``, or ``auth`` (base64 of ``user:password``); entries with neither (an identity token
alone) are skipped, since no provider here can use them.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

DOCKER_CONFIG_JSON = ".dockerconfigjson"
DOCKER_CFG = ".dockercfg"


@dataclasses.dataclass(frozen=True)
class RegistryCredential:
    """One registry login. ``password`` never appears in a repr (logs, tracebacks, Events)."""

    server: str  # as written in the Secret, scheme and path stripped: "myregistry.azurecr.io"
    username: str
    password: str = dataclasses.field(repr=False)
    secret: str = ""  # the imagePullSecret it came from (for messages)


class RegistrySecretError(ValueError):
    """The Secret is not a docker config (the message names the Secret, never its content)."""


def image_pull_secret_names(pod: Mapping[str, Any]) -> list[str]:
    names = []
    for ref in (pod.get("spec") or {}).get("imagePullSecrets") or []:
        name = (ref or {}).get("name")
        if name and name not in names:
            names.append(str(name))
    return names


def registry_server(key: str) -> str:
    """``https://index.docker.io/v1/`` -> ``index.docker.io``; ``myreg.io:5000/x`` -> ``myreg.io:5000``."""
    server = key.strip()
    for scheme in ("https://", "http://"):
        if server.startswith(scheme):
            server = server[len(scheme) :]
    return server.split("/", 1)[0].lower()


def _entry(server: str, entry: Any, secret: str) -> RegistryCredential | None:
    if not isinstance(entry, Mapping):
        raise RegistrySecretError(f'imagePullSecret "{secret}": the entry for {server} is not an object')
    username, password = entry.get("username"), entry.get("password")
    if not (username and password) and entry.get("auth"):
        try:
            decoded = base64.b64decode(str(entry["auth"]), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise RegistrySecretError(
                f'imagePullSecret "{secret}": the auth of {server} is not base64 of user:password'
            ) from exc
        username, sep, password = decoded.partition(":")
        if not sep:
            raise RegistrySecretError(f'imagePullSecret "{secret}": the auth of {server} has no ":"')
    if not (username and password):
        return None
    return RegistryCredential(registry_server(server), str(username), str(password), secret)


def parse_registry_secret(name: str, data: Mapping[str, bytes]) -> list[RegistryCredential]:
    """The logins of one imagePullSecret (decoded data); raises RegistrySecretError."""
    if DOCKER_CONFIG_JSON in data:
        raw, nested = data[DOCKER_CONFIG_JSON], True
    elif DOCKER_CFG in data:
        raw, nested = data[DOCKER_CFG], False
    else:
        raise RegistrySecretError(
            f'imagePullSecret "{name}" has neither {DOCKER_CONFIG_JSON} nor {DOCKER_CFG}'
        )
    try:
        config = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RegistrySecretError(f'imagePullSecret "{name}" is not valid JSON') from exc
    auths = config.get("auths") if nested and isinstance(config, Mapping) else config
    if not isinstance(auths, Mapping):
        raise RegistrySecretError(f'imagePullSecret "{name}" has no "auths" object')
    found = (_entry(str(server), entry, name) for server, entry in auths.items())
    return [credential for credential in found if credential is not None]


def registry_credentials(
    names: Sequence[str], secrets: Mapping[str, Mapping[str, bytes] | object | None]
) -> tuple[tuple[RegistryCredential, ...], list[str]]:
    """(the logins of every readable imagePullSecret, one problem per Secret that gave none).

    Like the kubelet, a missing or malformed pull secret is a warning, not a reason to stop: the
    image may be public, or another secret may cover its registry. The first login per server wins.
    """
    credentials: dict[str, RegistryCredential] = {}
    problems: list[str] = []
    for name in names:
        data = secrets.get(name)
        if not isinstance(data, Mapping):
            problems.append(f'imagePullSecret "{name}" was not found or could not be read')
            continue
        try:
            for credential in parse_registry_secret(name, data):
                credentials.setdefault(credential.server, credential)
        except RegistrySecretError as exc:
            problems.append(str(exc))
    return tuple(credentials.values()), problems

"""Ownership tags, names and content hashes of what the provider creates in AWS.

A task is tagged with the node, namespace, pod name and UID (``startedBy`` is the UID too); a task
definition with the node and its content hash; a secret with the node and the pod UID. Nothing
without this node's tag is ever stopped, deregistered or deleted.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from vk_operator.provider import PodRef

TAG_NODE = "vk-operator.node"
TAG_NAMESPACE = "vk-operator.namespace"
TAG_NAME = "vk-operator.name"
TAG_UID = "vk-operator.uid"
TAG_HASH = "vk-operator.hash"  # a task definition's content hash
TAG_INIT = "vk-operator.init-containers"  # a task's init containers (non-essential), comma-separated
TAG_RESTART = "vk-operator.restart-policy"  # a task's pod restartPolicy (restarts after a VK restart)
OWNERSHIP_TAGS = (TAG_NODE, TAG_NAMESPACE, TAG_NAME, TAG_UID, TAG_HASH, TAG_INIT, TAG_RESTART)
FILES_CONTAINER = "vk-files"  # the init container that writes file volumes (a reserved container name)
FILES_ROOT = "/vk-files"  # where it mounts them
MAX_TAGS = 50  # ECS and Secrets Manager: 50 user tags per resource
MAX_KEY = 128
MAX_VALUE = 256
_TAG_TEXT = re.compile(r"^[\w .:/=+\-@]*$", re.UNICODE)


def check_tag(key: str, value: str) -> None:
    """ECS's tag rules: key 1-128, value 0-256 characters of letters, digits, spaces and ``_.:/=+-@``;
    no ``aws:`` prefix."""
    if not 1 <= len(key) <= MAX_KEY or not _TAG_TEXT.match(key):
        raise ValueError(f"tag key {key!r}: 1-128 letters, digits, spaces or _.:/=+-@")
    if len(value) > MAX_VALUE or not _TAG_TEXT.match(value):
        raise ValueError(f"tag {key!r}: the value must be 0-256 letters, digits, spaces or _.:/=+-@")
    if key.lower().startswith("aws:"):
        raise ValueError(f"tag key {key!r}: the aws: prefix is reserved")


def is_ownership_tag(key: str) -> bool:
    return key.lower() in OWNERSHIP_TAGS


def tag_list(tags: Mapping[str, str]) -> list[dict[str, str]]:
    """ECS's tag shape (``key``/``value``)."""
    return [{"key": key, "value": value} for key, value in tags.items()]


def tag_map(tags: Iterable[Mapping[str, Any]] | None) -> dict[str, str]:
    """ECS (``key``/``value``) or Secrets Manager (``Key``/``Value``) tags as a dict."""
    found: dict[str, str] = {}
    for tag in tags or ():
        key = tag.get("key", tag.get("Key"))
        if key is not None:
            found[str(key)] = str(tag.get("value", tag.get("Value", "")))
    return found


def ref_of(tags: Mapping[str, str], node: str) -> PodRef | None:
    """The pod a resource belongs to, when its tags say it is this node's."""
    if tags.get(TAG_NODE) != node:
        return None
    namespace, name, uid = tags.get(TAG_NAMESPACE), tags.get(TAG_NAME), tags.get(TAG_UID)
    if not (namespace and name and uid):
        return None
    return PodRef(namespace, name, uid)


def content_hash(document: Mapping[str, Any]) -> str:
    """A stable hash of a request body (sorted keys, no whitespace)."""
    text = json.dumps(document, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def family_prefix(node: str) -> str:
    """What every task definition family of ``node`` starts with (node names have dots: replaced)."""
    return f"vk-{re.sub(r'[^A-Za-z0-9_-]', '-', node)[:200]}-"


def family(node: str, digest: str) -> str:
    """The task definition family of one pod template on one node: ``vk-<node>-<hash>``, at most
    255 letters, digits, hyphens and underscores."""
    return f"{family_prefix(node)}{digest[:32]}"


def is_family_of(node: str, name: str) -> bool:
    """Whether ``name`` has the shape of one of ``node``'s families. Not proof of ownership: two node
    names can have one prefix (``a.b`` and ``a-b``), and ``vk-a-`` begins ``vk-a-b-``'s families
    too, which the exact shape rules out; the node tag decides."""
    prefix = family_prefix(node)
    return name.startswith(prefix) and re.fullmatch(r"[0-9a-f]{32}", name[len(prefix) :]) is not None


def secret_name(prefix: str, node: str, uid: str) -> str:
    return f"{prefix}/{node}/{uid}"


def registry_secret_name(prefix: str, node: str, uid: str, server: str) -> str:
    """The entry of the pod's login to ``server`` (``:`` of a port is not allowed in names)."""
    return f"{secret_name(prefix, node, uid)}/registry/{re.sub(r'[^A-Za-z0-9/_+=.@-]', '_', server)}"


def task_id(task_arn: str) -> str:
    """The task's id, the last part of its ARN (both the long and the old ARN format)."""
    return task_arn.rsplit("/", 1)[-1]

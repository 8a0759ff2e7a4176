"""Batch ids for the node's job and the pods' tasks, and the environment that carries a pod's identity.

Batch ids (jobs and tasks alike) are 1-64 letters, digits, hyphens and underscores, case-preserving
and case-insensitive. Tasks have no tags or metadata: a task's pod is recovered after a restart from
its environment (:data:`ENV_NAMESPACE`, :data:`ENV_NAME`, :data:`ENV_UID`); its display name says
``namespace/name`` for people. The node owns the job (its metadata names the node), so every task
of the job is this node's.
"""

from __future__ import annotations

import hashlib
import re

MAX_ID = 64
ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_NOT_ID = re.compile(r"[^A-Za-z0-9_-]+")

META_NODE = "vk-operator.node"  # the job's metadata item naming its virtual node
ENV_NAMESPACE = "VK_OPERATOR_POD_NAMESPACE"
ENV_NAME = "VK_OPERATOR_POD_NAME"
ENV_UID = "VK_OPERATOR_POD_UID"
ENV_CONTAINER = "VK_OPERATOR_CONTAINER"  # the container the task runs (name), for its status
ENV_IMAGE = "VK_OPERATOR_IMAGE"
RESERVED_ENV = frozenset({ENV_NAMESPACE, ENV_NAME, ENV_UID, ENV_CONTAINER, ENV_IMAGE})


def _readable(text: str) -> str:
    return _NOT_ID.sub("-", text).strip("-_")


def task_id(namespace: str, name: str, uid: str) -> str:
    """``<namespace>-<name>`` shortened, then the UID: unique per pod, readable in the portal."""
    uid_part = _readable(uid.lower()) or hashlib.sha256(uid.encode()).hexdigest()[:32]
    room = MAX_ID - len(uid_part) - 1
    prefix = _readable(f"{namespace}-{name}")[: max(room, 0)].rstrip("-_")
    return f"{prefix}-{uid_part}" if prefix else uid_part[:MAX_ID]


def job_id(node_name: str) -> str:
    """The node's job: ``vk-<node name>``, with a hash when the name does not fit as it is."""
    readable = "vk-" + _readable(node_name)
    if len(readable) <= MAX_ID and readable.lower().removeprefix("vk-") == node_name.lower():
        return readable
    digest = hashlib.sha256(node_name.encode()).hexdigest()[:10]
    return f"{readable[: MAX_ID - 11].rstrip('-_')}-{digest}"

"""Container group names and ownership tags (pure).

**Names.** The spec (2023-05-01) gives ``containerGroupName`` no pattern; ARM's naming rules for
``Microsoft.ContainerInstance/containerGroups`` do: 1-63 characters, lowercase letters, digits and
hyphens, starting and ending with a letter or digit (:data:`NAME_PATTERN`). We also never put two
hyphens in a row (some ARM naming rules forbid it; nothing is lost by avoiding it).

A pod's group is ``<namespace>-<pod>`` (azure-aci's name) when that is a valid name *and* the
namespace has no hyphen. The second condition keeps the plain names unambiguous: with it, the first
hyphen always ends the namespace, whereas azure-aci gives ``team-a``/``web`` and ``team``/``a-web``
the same group. Every other pod (hyphenated namespace, a dot in the pod name, too long) gets
``<prefix>-<hash>``: the prefix is ``<namespace>-<pod>`` made valid (any other character becomes
``-``, hyphen runs collapse) and cut to fit, the hash is the first :data:`HASH_LENGTH` hex digits of
SHA-256 over ``namespace + "/" + name`` (``/`` appears in neither, so distinct pairs hash distinct
inputs). Distinct pairs then collide only if the 48-bit hashes of two pods with the same prefix do,
or if someone names a pod ``<x>-<the hash of another pod>`` on purpose; the provider must still
treat a group whose UID tag is not the pod's as a conflict, never as the pod's own group.

**Tags** (ARM: names at most 512 characters without ``<>%&\\?/``, values at most 256, 50 a
resource; names are case-insensitive). Every group gets:

=========================  ===============================================
``vk-operator.node``       the virtual node's name: what ``list_pods`` filters on
``vk-operator.namespace``  the pod's namespace
``vk-operator.pod``        the pod's name
``vk-operator.uid``        the pod's UID: the ownership key
=========================  ===============================================

They are not azure-aci's (``NodeName``, ``PodName``...), so groups made by azure-aci are never
adopted, nor deleted as orphans. Kubernetes-style keys (``virtual-kubelet.io/node``) cannot be
used: ARM tag names cannot contain ``/``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

from vk_operator.provider import PodRef

NAME_MAX = 63
NAME_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
HASH_LENGTH = 12  # hex digits: 48 bits

TAG_NODE = "vk-operator.node"
TAG_NAMESPACE = "vk-operator.namespace"
TAG_POD = "vk-operator.pod"
TAG_UID = "vk-operator.uid"
OWNERSHIP_TAGS = (TAG_NODE, TAG_NAMESPACE, TAG_POD, TAG_UID)

MAX_TAGS = 50
TAG_NAME_MAX = 512
TAG_VALUE_MAX = 256
_TAG_NAME_FORBIDDEN = set("<>%&\\?/")


def is_valid_group_name(name: str) -> bool:
    """Whether ``name`` is a container group name we would make (ARM's rule, no ``--``)."""
    return len(name) <= NAME_MAX and bool(NAME_PATTERN.fullmatch(name)) and "--" not in name


def name_hash(namespace: str, name: str) -> str:
    return hashlib.sha256(f"{namespace}/{name}".encode()).hexdigest()[:HASH_LENGTH]


def container_group_name(namespace: str, name: str) -> str:
    """The container group of pod ``namespace/name`` (see the module docstring)."""
    plain = f"{namespace}-{name}"
    if "-" not in namespace and is_valid_group_name(plain):
        return plain
    prefix = re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", plain.lower()))
    prefix = prefix[: NAME_MAX - HASH_LENGTH - 1].strip("-")
    suffix = name_hash(namespace, name)
    return f"{prefix}-{suffix}" if prefix else suffix


def check_tag(key: str, value: str) -> None:
    """ValueError unless ARM accepts the tag ``key: value``."""
    if not key or len(key) > TAG_NAME_MAX:
        raise ValueError(f"tag name {key!r}: 1 to {TAG_NAME_MAX} characters")
    bad = sorted(_TAG_NAME_FORBIDDEN.intersection(key))
    if bad:
        raise ValueError(f"tag name {key!r}: ARM forbids {''.join(bad)!r} in tag names")
    if len(value) > TAG_VALUE_MAX:
        raise ValueError(f"tag {key!r}: the value is longer than {TAG_VALUE_MAX} characters")


def is_ownership_tag(key: str) -> bool:
    return key.lower() in OWNERSHIP_TAGS


def group_tags(ref: PodRef, node_name: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The tags of the pod's group: ``extra`` (the config's), then the ownership tags, which win."""
    tags = {k: v for k, v in (extra or {}).items() if not is_ownership_tag(k)}
    ownership = {TAG_NODE: node_name, TAG_NAMESPACE: ref.namespace, TAG_POD: ref.name, TAG_UID: ref.uid}
    for key, value in ownership.items():
        check_tag(key, value)
    tags.update(ownership)
    return tags


def _lookup(tags: Mapping[str, str], key: str) -> str | None:
    """``tags[key]``, ignoring case in the name as ARM does."""
    if key in tags:
        return tags[key]
    return next((v for k, v in tags.items() if k.lower() == key), None)


def ref_from_tags(tags: Mapping[str, str] | None) -> PodRef | None:
    """The pod a group belongs to, from its tags; None when any ownership tag is missing or empty."""
    if not tags:
        return None
    namespace, name, uid = (_lookup(tags, key) for key in (TAG_NAMESPACE, TAG_POD, TAG_UID))
    if not (namespace and name and uid):
        return None
    return PodRef(namespace, name, uid)


def owned_by(tags: Mapping[str, str] | None, node_name: str) -> bool:
    """Whether the group with ``tags`` is one of ``node_name``'s pods (node tag and a full ref)."""
    return bool(tags) and _lookup(tags or {}, TAG_NODE) == node_name and ref_from_tags(tags) is not None

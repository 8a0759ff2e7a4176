"""Pods held in memory for a long time, packed: compact JSON, deflated against a preset dictionary.

A pod decoded into dicts takes ~11 KB, as compact JSON ~1.8 KB, packed ~0.35 KB: the dictionary
holds the field names and values every pod repeats, so deflate needs only what differs. Packing
costs ~10 us, unpacking ~5 us plus the JSON decode; every unpack returns a fresh copy. JSON is
encoded and decoded by orjson, ~3x faster than the standard library's on pods.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

import orjson

_DICTIONARY = json.dumps(
    {
        "metadata": {
            "name": "",
            "namespace": "",
            "uid": "",
            "resourceVersion": "",
            "creationTimestamp": "",
            "deletionTimestamp": "",
            "deletionGracePeriodSeconds": 30,
            "labels": {"app": "", "pod-template-hash": ""},
            "annotations": {},
            "generateName": "",
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": "",
                    "uid": "",
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "volumes": [{"name": "kube-api-access-", "projected": {"sources": [], "defaultMode": 420}}],
            "containers": [
                {
                    "name": "",
                    "image": "",
                    "command": [],
                    "args": [],
                    "ports": [{"containerPort": 80, "protocol": "TCP"}],
                    "env": [{"name": "", "value": ""}],
                    "resources": {"limits": {"cpu": "", "memory": ""}, "requests": {"cpu": "", "memory": ""}},
                    "volumeMounts": [
                        {
                            "name": "kube-api-access-",
                            "readOnly": True,
                            "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount",
                        }
                    ],
                    "terminationMessagePath": "/dev/termination-log",
                    "terminationMessagePolicy": "File",
                    "imagePullPolicy": "IfNotPresent",
                }
            ],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "nodeName": "",
            "serviceAccountName": "default",
            "serviceAccount": "default",
            "automountServiceAccountToken": False,
            "securityContext": {},
            "schedulerName": "default-scheduler",
            "tolerations": [
                {"key": "virtual-kubelet.io/provider", "operator": "Exists", "effect": "NoSchedule"},
                {
                    "key": "node.kubernetes.io/not-ready",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                },
                {
                    "key": "node.kubernetes.io/unreachable",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 300,
                },
            ],
            "priority": 0,
            "enableServiceLinks": True,
            "preemptionPolicy": "PreemptLowerPriority",
        },
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "PodReadyToStartContainers", "status": "True", "lastProbeTime": None},
                {"type": "Initialized", "status": "True", "lastProbeTime": None},
                {"type": "Ready", "status": "True", "lastProbeTime": None},
                {"type": "ContainersReady", "status": "True", "lastProbeTime": None},
                {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": ""},
            ],
            "hostIP": "",
            "hostIPs": [{"ip": ""}],
            "podIP": "",
            "podIPs": [{"ip": ""}],
            "startTime": "",
            "containerStatuses": [
                {
                    "name": "",
                    "state": {"running": {"startedAt": ""}},
                    "lastState": {},
                    "ready": True,
                    "restartCount": 0,
                    "image": "",
                    "imageID": "",
                    "containerID": "",
                    "started": True,
                }
            ],
            "qosClass": "BestEffort",
        },
    },
    separators=(",", ":"),
).encode()


def pack(obj: Any) -> bytes:
    compressor = zlib.compressobj(1, zdict=_DICTIONARY)
    return compressor.compress(orjson.dumps(obj)) + compressor.flush()


def unpack(packed: bytes) -> Any:
    decompressor = zlib.decompressobj(zdict=_DICTIONARY)
    return orjson.loads(decompressor.decompress(packed) + decompressor.flush())

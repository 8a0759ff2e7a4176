"""imagePullSecrets -> registry logins (what ACI's imageRegistryCredentials and Batch's
containerSettings.registry receive)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from vk_operator.domain.env import ReadError, Sources
from vk_operator.domain.prepared import prepare, referenced_secrets
from vk_operator.domain.registry import (
    RegistryCredential,
    RegistrySecretError,
    parse_registry_secret,
    registry_credentials,
    registry_server,
)


def _auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def _config(auths: dict[str, Any]) -> dict[str, bytes]:
    return {".dockerconfigjson": json.dumps({"auths": auths}).encode()}


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            _config({"myreg.azurecr.io": {"username": "u", "password": "p"}}),
            [RegistryCredential("myreg.azurecr.io", "u", "p", "pull")],
        ),
        (  # auth alone, the form `kubectl create secret docker-registry` writes besides the fields
            _config({"https://index.docker.io/v1/": {"auth": _auth("me", "pa:ss")}}),
            [RegistryCredential("index.docker.io", "me", "pa:ss", "pull")],
        ),
        (  # the legacy type: the map without "auths"
            {".dockercfg": json.dumps({"quay.io": {"auth": _auth("q", "w")}}).encode()},
            [RegistryCredential("quay.io", "q", "w", "pull")],
        ),
        (  # an identity token alone: no provider here can use it
            _config({"x.io": {"identitytoken": "t"}}),
            [],
        ),
        (
            _config({"Reg.IO:5000/path": {"username": "a", "password": "b"}}),
            [RegistryCredential("reg.io:5000", "a", "b", "pull")],
        ),
    ],
)
def test_registry_secrets_parse(data: dict[str, bytes], expected: list[RegistryCredential]) -> None:
    assert parse_registry_secret("pull", data) == expected


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"token": b"x"}, "has neither .dockerconfigjson nor .dockercfg"),
        ({".dockerconfigjson": b"{not json"}, "is not valid JSON"),
        ({".dockerconfigjson": b'{"auths": []}'}, 'has no "auths" object'),
        (_config({"r.io": {"auth": "%%%"}}), "is not base64 of user:password"),
        (_config({"r.io": {"auth": base64.b64encode(b"nocolon").decode()}}), 'has no ":"'),
    ],
)
def test_malformed_registry_secrets_are_named_never_shown(data: dict[str, bytes], problem: str) -> None:
    with pytest.raises(RegistrySecretError, match=problem) as caught:
        parse_registry_secret("pull", data)
    assert '"pull"' in str(caught.value)


def test_the_password_is_in_no_repr() -> None:
    assert "hunter2" not in repr(RegistryCredential("r.io", "u", "hunter2"))


def test_missing_and_malformed_secrets_are_problems_and_the_first_login_per_server_wins() -> None:
    secrets: dict[str, Any] = {
        "a": _config({"r.io": {"username": "first", "password": "1"}}),
        "b": _config({"r.io": {"username": "second", "password": "2"}, "s.io": {"auth": _auth("s", "3")}}),
        "gone": None,
        "denied": ReadError("forbidden"),
        "bad": {"x": b""},
    }
    credentials, problems = registry_credentials(["a", "gone", "b", "denied", "bad"], secrets)
    assert [(c.server, c.username) for c in credentials] == [("r.io", "first"), ("s.io", "s")]
    assert len(problems) == 3 and all(p.startswith('imagePullSecret "') for p in problems)


def test_registry_server_normalises_the_key() -> None:
    assert registry_server(" https://GHCR.io/v2/ ") == "ghcr.io"


def _pod(pull_secrets: list[str]) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "n", "uid": "u"},
        "spec": {
            "containers": [{"name": "app", "image": "myreg.azurecr.io/app:1"}],
            "imagePullSecrets": [{"name": n} for n in pull_secrets],
            "enableServiceLinks": False,
        },
    }


def test_prepare_hands_the_logins_over_and_warns_about_a_missing_pull_secret_but_goes_on() -> None:
    pod = _pod(["pull", "absent"])
    assert {"pull", "absent"} <= referenced_secrets(pod)
    sources = Sources(
        configmaps={}, secrets={"pull": _config({"myreg.azurecr.io": {"auth": _auth("u", "pw")}})}
    )
    preparation = prepare(pod, sources)
    assert preparation.fatal is None and preparation.prepared is not None
    assert preparation.prepared.registry_credentials == (
        RegistryCredential("myreg.azurecr.io", "u", "pw", "pull"),
    )
    [event] = preparation.events
    assert event.reason == "FailedToRetrieveImagePullSecret" and event.warning
    assert '"absent"' in event.message and "pw" not in event.message

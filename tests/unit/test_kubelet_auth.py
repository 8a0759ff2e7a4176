"""The kubelet's request attribute mapping, authentication order and the decision caches."""

from __future__ import annotations

from typing import Any

import pytest

from vk_operator.kubelet_api.auth import (
    Attributes,
    Authenticator,
    Authorizer,
    Forbidden,
    Unauthenticated,
    User,
    bearer_token,
    request_attributes,
    user_from_peercert,
)


def _subresources(method: str, path: str, **kw: Any) -> tuple[str, list[str]]:
    attrs = request_attributes(method, path, "node-a", **kw)
    assert {(a.resource, a.name, a.version) for a in attrs} == {("nodes", "node-a", "v1")}
    assert len({a.verb for a in attrs}) == 1
    return attrs[0].verb, [a.subresource for a in attrs]


@pytest.mark.parametrize(
    ("path", "subresources"),
    [
        # As pkg/kubelet/server/auth.go (v1.37, KubeletFineGrainedAuthz GA) maps them.
        ("/stats/summary", ["stats"]),
        ("/stats/", ["stats"]),
        ("/metrics", ["metrics"]),
        ("/metrics/resource", ["metrics"]),
        ("/metrics/cadvisor", ["metrics"]),
        ("/logs/", ["log"]),
        ("/logs/messages", ["log"]),
        ("/containerLogs/ns/pod/c", ["proxy"]),  # container logs are nodes/proxy, not nodes/log
        ("/pods", ["pods", "proxy"]),
        ("/pods/", ["pods", "proxy"]),
        ("/runningpods/", ["pods", "proxy"]),
        ("/healthz", ["healthz", "proxy"]),
        ("/configz", ["configz", "proxy"]),
        ("/checkpoint/ns/pod/c", ["checkpoint"]),
        ("/exec/ns/pod/c", ["proxy"]),
        ("/", ["proxy"]),
        ("/statsx", ["proxy"]),  # a prefix is not a subpath
        ("/podsx", ["proxy"]),
        ("/metricsfoo", ["proxy"]),
    ],
)
def test_subresource_by_path(path: str, subresources: list[str]) -> None:
    assert _subresources("GET", path)[1] == subresources


@pytest.mark.parametrize(
    ("method", "verb"),
    [
        ("GET", "get"),
        ("POST", "create"),
        ("PUT", "update"),
        ("PATCH", "patch"),
        ("DELETE", "delete"),
        ("HEAD", ""),
    ],
)
def test_verb_by_method(method: str, verb: str) -> None:
    assert _subresources(method, "/pods")[0] == verb


def test_upgrades_create() -> None:
    assert _subresources("GET", "/exec/ns/pod/c", upgrade=True) == ("create", ["proxy"])


def test_client_certificate_user_is_cn_with_organizations_as_groups() -> None:
    peercert = {
        "subject": (
            (("organizationName", "system:masters"),),
            (("organizationName", "team-a"),),
            (("commonName", "alice"),),
        )
    }
    assert user_from_peercert(peercert) == User("alice", ("system:masters", "team-a"))
    assert user_from_peercert({}) is None
    assert user_from_peercert(None) is None


def test_bearer_token_header() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    assert bearer_token("Basic abc") is None
    assert bearer_token("Bearer ") is None
    assert bearer_token(None) is None


class FakeKube:
    """Answers TokenReviews and SubjectAccessReviews from tables; counts calls."""

    def __init__(self) -> None:
        self.tokens: dict[str, dict[str, Any]] = {}
        self.allowed: set[tuple[str, str]] = set()  # (user, subresource)
        self.calls: list[str] = []

    async def create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(path.rsplit("/", 1)[1])
        if path.endswith("tokenreviews"):
            user = self.tokens.get(body["spec"]["token"])
            if user is None:
                return {"status": {"authenticated": False, "error": "invalid bearer token"}}
            return {"status": {"authenticated": True, "user": user}}
        spec = body["spec"]
        key = (spec["user"], spec["resourceAttributes"]["subresource"])
        return {"status": {"allowed": key in self.allowed}}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_authentication_order_and_token_cache() -> None:
    kube, clock = FakeKube(), Clock()
    kube.tokens["good"] = {"username": "bob", "uid": "1", "groups": ["devs"], "extra": {"k": ["v"]}}
    authn = Authenticator(kube, cache_ttl=60, failure_ttl=5, clock=clock)  # type: ignore[arg-type]
    cert = {"subject": ((("commonName", "alice"),),)}
    assert (await authn.authenticate(cert, "Bearer good")).name == "alice"  # certificate first
    bob = await authn.authenticate(None, "Bearer good")
    assert bob == User("bob", ("devs", "system:authenticated"), "1", (("k", ("v",)),))
    await authn.authenticate(None, "Bearer good")
    assert kube.calls == ["tokenreviews"]  # cached
    clock.now += 61
    await authn.authenticate(None, "Bearer good")
    assert kube.calls == ["tokenreviews"] * 2
    with pytest.raises(Unauthenticated, match="invalid bearer token"):
        await authn.authenticate(None, "Bearer bad")
    with pytest.raises(Unauthenticated):
        await authn.authenticate(None, None)


async def test_anonymous_only_when_enabled_and_never_for_a_bad_token() -> None:
    kube = FakeKube()
    authn = Authenticator(kube, anonymous=True)  # type: ignore[arg-type]
    assert await authn.authenticate(None, None) == User("system:anonymous", ("system:unauthenticated",))
    with pytest.raises(Unauthenticated):
        await authn.authenticate(None, "Bearer forged")


async def test_authorization_any_subresource_allows_and_decisions_are_cached() -> None:
    kube, clock = FakeKube(), Clock()
    authz = Authorizer(kube, allowed_ttl=300, denied_ttl=30, clock=clock)  # type: ignore[arg-type]
    user = User("carol", ("system:authenticated",))
    pods = request_attributes("GET", "/pods", "node-a")
    with pytest.raises(Forbidden) as denied:
        await authz.authorize(user, pods)
    assert str(denied.value) == (
        "Forbidden (user=carol, verb=get, resource=nodes, subresource(s)=[pods proxy])"
    )
    assert kube.calls == ["subjectaccessreviews"] * 2
    kube.allowed.add(("carol", "proxy"))
    with pytest.raises(Forbidden):
        await authz.authorize(user, pods)  # the denial is cached...
    assert len(kube.calls) == 2
    clock.now += 31  # ...for the unauthorized TTL
    await authz.authorize(user, pods)
    assert len(kube.calls) == 4  # pods (still denied), then proxy (allowed)
    kube.allowed.clear()
    clock.now += 299
    await authz.authorize(user, [Attributes("get", "proxy", "node-a", "/pods")])  # allowed, cached
    assert len(kube.calls) == 4

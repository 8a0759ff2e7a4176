"""Authentication and authorization of kubelet API requests, as the kubelet's webhook mode does them.

* Authentication (first match wins): a client certificate verified by the TLS layer against
  ``--client-ca-file`` (user = CN, groups = O); a bearer token checked with a TokenReview; else
  anonymous (``system:anonymous``) only with ``--anonymous-auth``, otherwise 401. A token the API
  rejects is a 401 even with anonymous access on (the kubelet never downgrades a bad token).
* Authorization: a SubjectAccessReview per request attribute set, mapped from the path exactly as
  ``pkg/kubelet/server/auth.go`` (v1.37, KubeletFineGrainedAuthz GA) does; any allowed set wins.
  Decisions are cached: allowed for ``allowed_ttl``, denied for ``denied_ttl``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from vk_operator.kube import ApiError, Kube

log = logging.getLogger(__name__)

ANONYMOUS = "system:anonymous"
UNAUTHENTICATED = "system:unauthenticated"
AUTHENTICATED = "system:authenticated"

_VERBS = {"POST": "create", "GET": "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


@dataclasses.dataclass(frozen=True)
class User:
    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def with_group(self, group: str) -> User:
        return self if group in self.groups else dataclasses.replace(self, groups=(*self.groups, group))


@dataclasses.dataclass(frozen=True)
class Attributes:
    """The SubjectAccessReview resource attributes of one request."""

    verb: str
    subresource: str
    name: str  # the node
    path: str
    resource: str = "nodes"
    version: str = "v1"


def _is_subpath(subpath: str, path: str) -> bool:
    path = path.removesuffix("/")
    return subpath == path or (subpath.startswith(path) and subpath[len(path)] == "/")


def request_attributes(method: str, path: str, node_name: str, *, upgrade: bool = False) -> list[Attributes]:
    """The kubelet's attribute mapping: resource nodes/NODE, subresource(s) by path, verb by method.

    Connection upgrades (exec/attach/port-forward over SPDY or WebSocket) create something, whatever
    the method says. Paths under more than one subresource (``/pods`` -> pods, then proxy) are
    allowed when any of them is.
    """
    verb = "create" if upgrade else _VERBS.get(method.upper(), "")
    subresources: list[str] = []
    if _is_subpath(path, "/allocatedPods") or _is_subpath(path, "/pods"):
        subresources.append("pods")
    elif _is_subpath(path, "/healthz"):
        subresources.append("healthz")
    elif _is_subpath(path, "/configz"):
        subresources.append("configz")
    elif _is_subpath(path, "/runningpods/"):
        subresources.append("pods")
    if _is_subpath(path, "/stats/"):
        subresources.append("stats")
    elif _is_subpath(path, "/metrics"):
        subresources.append("metrics")
    elif _is_subpath(path, "/logs/"):
        subresources.append("log")
    elif _is_subpath(path, "/checkpoint/"):
        subresources.append("checkpoint")
    elif _is_subpath(path, "/statusz"):
        subresources.append("statusz")
    elif _is_subpath(path, "/flagz"):
        subresources.append("configz")
    else:
        subresources.append("proxy")
    return [Attributes(verb, sub, node_name, path) for sub in subresources]


class Unauthenticated(Exception):
    pass


class Forbidden(Exception):
    pass


class AuthorizationError(Exception):
    """The authorizer itself failed (the API is unreachable...): 500, like the kubelet."""


def user_from_peercert(peercert: Mapping[str, Any] | None) -> User | None:
    """The user of a verified client certificate (``ssl.SSLSocket.getpeercert()`` form)."""
    if not peercert:
        return None
    common_name, organizations = "", []
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                common_name = value
            elif key == "organizationName":
                organizations.append(value)
    if not common_name:
        return None
    return User(common_name, tuple(organizations))


def bearer_token(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


class _TTLCache:
    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._entries: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any) -> Any:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self._clock():
            del self._entries[key]
            return None
        return entry[1]

    def put(self, key: Any, value: Any, ttl: float) -> None:
        if ttl <= 0:
            return
        if len(self._entries) > 10_000:  # bounded: drop what has expired, else everything
            now = self._clock()
            self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
            if len(self._entries) > 10_000:
                self._entries.clear()
        self._entries[key] = (self._clock() + ttl, value)


class Authenticator:
    def __init__(
        self,
        kube: Kube,
        *,
        anonymous: bool = False,
        cache_ttl: float = 120.0,
        failure_ttl: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.anonymous = anonymous
        self.cache_ttl = cache_ttl
        self.failure_ttl = failure_ttl
        self._cache = _TTLCache(clock)
        self.token_reviews = 0  # API calls made, for tests and metrics

    async def authenticate(self, peercert: Mapping[str, Any] | None, authorization: str | None) -> User:
        user = user_from_peercert(peercert)
        if user is not None:
            return user.with_group(AUTHENTICATED)
        token = bearer_token(authorization)
        if token is not None:
            return await self._review_token(token)
        if self.anonymous:
            return User(ANONYMOUS, (UNAUTHENTICATED,))
        raise Unauthenticated("no client certificate or bearer token, and anonymous access is off")

    async def _review_token(self, token: str) -> User:
        key = hashlib.sha256(token.encode()).hexdigest()
        cached = self._cache.get(key)
        if isinstance(cached, User):
            return cached
        if isinstance(cached, str):
            raise Unauthenticated(cached)
        self.token_reviews += 1
        review = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token},
        }
        try:
            result = await self.kube.create("/apis/authentication.k8s.io/v1/tokenreviews", review)
        except ApiError as exc:
            log.warning("TokenReview failed: %s", exc)
            raise Unauthenticated(f"token review failed: {exc.message or exc.status}") from exc
        status = result.get("status") or {}
        if not status.get("authenticated"):
            reason = status.get("error") or "token not authenticated"
            self._cache.put(key, reason, self.failure_ttl)
            raise Unauthenticated(reason)
        info = status.get("user") or {}
        user = User(
            str(info.get("username", "")),
            tuple(info.get("groups") or ()),
            str(info.get("uid", "")),
            tuple(sorted((k, tuple(v)) for k, v in (info.get("extra") or {}).items())),
        ).with_group(AUTHENTICATED)
        self._cache.put(key, user, self.cache_ttl)
        return user


class Authorizer:
    def __init__(
        self,
        kube: Kube,
        *,
        allowed_ttl: float = 300.0,
        denied_ttl: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kube = kube
        self.allowed_ttl = allowed_ttl
        self.denied_ttl = denied_ttl
        self._cache = _TTLCache(clock)
        self.reviews = 0  # SubjectAccessReviews sent

    async def authorize(self, user: User, attributes: list[Attributes]) -> None:
        """Return when any attribute set is allowed; raise Forbidden (403) or AuthorizationError."""
        for attrs in attributes:
            if await self._allowed(user, attrs):
                return
        first = attributes[0]
        subresources = " ".join(a.subresource for a in attributes)
        raise Forbidden(
            f"Forbidden (user={user.name}, verb={first.verb}, resource={first.resource}, "
            f"subresource(s)=[{subresources}])"
        )

    async def _allowed(self, user: User, attrs: Attributes) -> bool:
        key = (user, attrs.verb, attrs.resource, attrs.subresource, attrs.name)
        cached = self._cache.get(key)
        if cached is not None:
            return bool(cached)
        self.reviews += 1
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": user.name,
                "groups": list(user.groups),
                "uid": user.uid,
                "extra": {k: list(v) for k, v in user.extra},
                "resourceAttributes": {
                    "verb": attrs.verb,
                    "group": "",
                    "version": attrs.version,
                    "resource": attrs.resource,
                    "subresource": attrs.subresource,
                    "name": attrs.name,
                },
            },
        }
        try:
            result = await self.kube.create("/apis/authorization.k8s.io/v1/subjectaccessreviews", review)
        except ApiError as exc:
            raise AuthorizationError(
                f"Authorization error (user={user.name}, verb={attrs.verb}, resource={attrs.resource}, "
                f"subresource={attrs.subresource}): {exc}"
            ) from exc
        allowed = bool((result.get("status") or {}).get("allowed"))
        self._cache.put(key, allowed, self.allowed_ttl if allowed else self.denied_ttl)
        return allowed

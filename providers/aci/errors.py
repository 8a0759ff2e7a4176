"""Azure SDK failures as the core's errors (docs/providers.md, *Errors*).

=================================================  ==============================================
429 (any code)                                     ``ThrottledError``, ``retry_after`` from the
                                                   ``Retry-After`` header: the core pauses every call
409 ``ContainerGroupQuotaReached``,                ``TransientError``, ACI's code as the reason and
``ServiceUnavailable`` (no capacity), ``Conflict``  its message on the pod: quota and capacity free up
(being deleted) and any other 409
400 ``InaccessibleImage``, ``InvalidContainer...``  ``PermanentError``, ACI's code as the reason: the
and any other 4xx but those below                  same request can never succeed
401, 403 (credentials, RBAC)                       ``PermanentError`` (reason ``AuthorizationFailed``
                                                   or ACI's code)
404 ``ResourceGroupNotFound``                      ``TransientError``: someone may create it again
404 (the group)                                    ``NotFoundError`` (callers usually handle it first)
408, 5xx                                           ``TransientError``
no response: connection refused, DNS, timeouts     ``TransientError`` (reason ``ArmUnreachable``)
a credential that cannot get a token               ``TransientError`` (``AzureCredentialUnavailable``)
=================================================  ==============================================

Messages are one line, ``<what>: ACI <Code>: <message>``, at most :data:`MAX_MESSAGE` characters.
They come from ARM's error body, never from what we sent (secure values stay out of them).
"""

from __future__ import annotations

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
)

from providers.aci.throttle import retry_after_seconds
from vk_operator.provider import (
    NotFoundError,
    PermanentError,
    ProviderError,
    ThrottledError,
    TransientError,
)

MAX_MESSAGE = 1000
UNREACHABLE = "ArmUnreachable"
CREDENTIAL_UNAVAILABLE = "AzureCredentialUnavailable"
AUTHORIZATION_FAILED = "AuthorizationFailed"
THROTTLED = "SubscriptionRequestsThrottled"
RESOURCE_GROUP_NOT_FOUND = "ResourceGroupNotFound"


def one_line(text: object, limit: int = MAX_MESSAGE) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _reason(code: str | None, default: str) -> str:
    """ARM codes are CamelCase words: a good pod status reason. Anything else: ``default``."""
    if code and code.isascii() and code[:1].isupper() and code.isalnum() and len(code) <= 64:
        return code
    return default


def error_code(exc: HttpResponseError) -> str | None:
    return exc.error.code if exc.error is not None else None


def error_message(exc: HttpResponseError) -> str:
    if exc.error is not None and exc.error.message:
        return one_line(exc.error.message)
    return one_line(exc.reason or f"HTTP {exc.status_code}")


def status_of(exc: BaseException) -> int | None:
    return exc.status_code if isinstance(exc, HttpResponseError) else None


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, HttpResponseError) and exc.status_code == 404


def mapped(exc: AzureError, what: str) -> ProviderError:
    """``exc`` (from a call doing ``what``) as the core's error."""
    if isinstance(exc, HttpResponseError) and exc.status_code is not None:
        status = exc.status_code
        code = error_code(exc)
        shown = f"{what}: ACI {code}: {error_message(exc)}" if code else f"{what}: {error_message(exc)}"
        shown = one_line(shown)
        headers: dict[str, str] = dict(getattr(exc.response, "headers", None) or {})
        if status == 429:
            return ThrottledError(
                shown, retry_after=retry_after_seconds(headers), reason=_reason(code, THROTTLED)
            )
        if status == 404:
            if code == RESOURCE_GROUP_NOT_FOUND:
                return TransientError(shown, reason=RESOURCE_GROUP_NOT_FOUND)
            return NotFoundError(shown, reason=_reason(code, "NotFound"))
        if status == 409 or status == 408 or status >= 500:
            return TransientError(
                shown, reason=_reason(code, "AciUnavailable" if status >= 500 else "Conflict")
            )
        if status in (401, 403):
            return PermanentError(shown, reason=_reason(code, AUTHORIZATION_FAILED))
        return PermanentError(shown, reason=_reason(code, "AciRejected"))
    if isinstance(exc, ClientAuthenticationError):  # from the credential: no ARM response
        return TransientError(
            f"{what}: the Azure credential cannot get a token: {one_line(exc.message)}",
            reason=CREDENTIAL_UNAVAILABLE,
        )
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return TransientError(f"{what}: cannot reach ARM: {one_line(exc.message)}", reason=UNREACHABLE)
    return TransientError(f"{what}: {type(exc).__name__}: {one_line(exc.message)}", reason="AciFailed")

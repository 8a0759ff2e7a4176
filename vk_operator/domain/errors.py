"""The errors a provider raises, which the core maps onto pod status, Events and retries.

A cloud SDK's failures map onto these (see docs/providers.md):

========================  ===========================================================================
``TransientError``        retried with the core's capped backoff; the pod stays Pending with the
                          message, and fails once ``--pod-create-deadline`` has passed
``ThrottledError``        transient; ``retry_after`` (seconds) pauses *every* call to the provider
``PermanentError``        no retry can help: the pod fails with the reason and message
``InvalidPodError``       permanent, and names the pod field the provider cannot express
``NotFoundError``         the provider has no such pod (a delete of it has nothing left to do)
========================  ===========================================================================

Any other exception from a provider is treated as transient (``UnexpectedProviderError``): the pod
gets its type and message as status reason and a Warning Event, and it counts against the deadline.
"""

from __future__ import annotations


class ProviderError(Exception):
    """A provider call failed. ``permanent`` errors are not retried: the pod fails.

    ``reason`` is the short CamelCase word written as the pod's status reason and Event reason
    (``ProviderFailed`` when not given).
    """

    default_reason = "ProviderFailed"

    def __init__(self, message: str, *, permanent: bool = False, reason: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.reason = reason or self.default_reason


class TransientError(ProviderError):
    """Retrying may help (a 5xx, a conflict, no capacity right now)."""

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message, permanent=False, reason=reason)


class PermanentError(ProviderError):
    """Retrying cannot help (a quota that will not change, an image the backend can never run)."""

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message, permanent=True, reason=reason)


class InvalidPodError(PermanentError):
    """The pod asks for something this provider cannot express; ``field`` is its path in the pod
    (``spec.containers[0].args``)."""

    default_reason = "InvalidPod"

    def __init__(self, field: str, message: str, *, reason: str | None = None) -> None:
        super().__init__(f"{field}: {message}", reason=reason)
        self.field = field


class NotFoundError(ProviderError):
    """The provider has no such pod."""

    default_reason = "NotFound"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message, permanent=False, reason=reason)


class ThrottledError(TransientError):
    """The backend refused the call for its rate limit (HTTP 429, ThrottlingException...).

    ``retry_after`` (seconds, when the backend says) holds back every call the core makes to this
    provider until it has passed, not only the call that got the answer.
    """

    default_reason = "ProviderThrottled"

    def __init__(self, message: str, *, retry_after: float | None = None, reason: str | None = None) -> None:
        super().__init__(message, reason=reason)
        self.retry_after = retry_after


class ProviderTimeoutError(TransientError):
    """Raised by the core when a provider call outlives its timeout (transient)."""

    default_reason = "ProviderTimeout"


class UnexpectedProviderError(TransientError):
    """Raised by the core in place of an exception that is not a ProviderError (transient)."""


class LogsUnavailable(Exception):
    """The container exists but has no such logs (waiting to start, no previous instance...)."""


class ExecError(Exception):
    """The command could not be run at all (container not running, backend refused...).

    Reported to the client as an internal error, not as an exit code.
    """


class PortForwardError(Exception):
    """Nothing can be reached on that port of the pod (connection refused, pod not running...)."""

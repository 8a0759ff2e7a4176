"""Batch shared-key authentication, verified as the service does: recompute the signature and compare.

The string to sign (learn.microsoft.com, "Authenticate requests to the Azure Batch service")::

    VERB \\n Content-Encoding \\n Content-Language \\n Content-Length \\n Content-MD5 \\n
    Content-Type \\n Date \\n If-Modified-Since \\n If-Match \\n If-None-Match \\n
    If-Unmodified-Since \\n Range \\n
    CanonicalizedHeaders      every ``ocp-*`` header, name lowercased, sorted, ``name:value\\n``
    CanonicalizedResource     ``/<account><encoded URI path>``, then for each query parameter
                              (names lowercased and sorted, values URL-decoded; several values of
                              one name sorted and comma-joined) ``\\nname:value``

The signature is ``base64(HMAC-SHA256(base64decode(key), utf8(string_to_sign)))`` and the header
``Authorization: SharedKey <account>:<signature>``. Header values are the ones received, so a
client that signs a header it does not send (or sends one it did not sign) fails, as on Azure.
Requests must carry ``ocp-date`` or ``Date`` no more than 15 minutes off, as Azure requires.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import hashlib
import hmac
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass

SIGNED_HEADERS = (
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
)
MAX_CLOCK_SKEW = dt.timedelta(minutes=15)


def string_to_sign(method: str, raw_path: str, query: str, headers: Mapping[str, str], account: str) -> str:
    """The canonical string of a request; ``raw_path`` as sent (percent-encoded), ``query`` raw."""
    lowered = {k.lower(): v for k, v in headers.items()}
    parts = [method.upper()]
    parts += [lowered.get(name, "") for name in SIGNED_HEADERS]
    text = "\n".join(parts) + "\n"
    ocp = sorted((k, v) for k, v in lowered.items() if k.startswith("ocp-") and v)
    text += "".join(f"{k}:{v}\n" for k, v in ocp)
    text += f"/{account}{raw_path}"
    values: dict[str, list[str]] = {}
    for name, value in urllib.parse.parse_qsl(query, keep_blank_values=False):
        values.setdefault(name.lower(), []).append(value)
    for name in sorted(values):
        text += f"\n{name}:{','.join(sorted(values[name]))}"
    return text


def sign(key: str, text: str) -> str:
    digest = hmac.new(base64.b64decode(key), text.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


@dataclass(frozen=True)
class AuthFailure:
    status: int
    code: str
    message: str


def verify(
    method: str,
    raw_path: str,
    query: str,
    headers: Mapping[str, str],
    accounts: Mapping[str, str],
    now: dt.datetime,
) -> AuthFailure | None:
    """None when the request is signed by one of ``accounts`` (name -> base64 key), else why not."""
    lowered = {k.lower(): v for k, v in headers.items()}
    authorization = lowered.get("authorization", "")
    if not authorization:
        return AuthFailure(401, "MissingRequiredHeader", "The Authorization header is missing.")
    scheme, _, credential = authorization.partition(" ")
    if scheme != "SharedKey":
        return AuthFailure(
            401, "InvalidAuthenticationInfo", f"Authentication scheme {scheme!r} is not supported here."
        )
    account, _, signature = credential.partition(":")
    if account not in accounts:
        return AuthFailure(403, "AuthenticationFailed", f"Account {account!r} is not known.")
    stamp = lowered.get("ocp-date") or lowered.get("date")
    if not stamp:
        return AuthFailure(403, "AuthenticationFailed", "The request carries neither ocp-date nor Date.")
    try:
        sent = email.utils.parsedate_to_datetime(stamp)
    except (TypeError, ValueError):
        return AuthFailure(403, "AuthenticationFailed", f"The request date {stamp!r} is not an HTTP date.")
    if sent.tzinfo is None or abs(now - sent) > MAX_CLOCK_SKEW:
        return AuthFailure(403, "RequestExpired", f"The request date {stamp!r} is too far from now.")
    expected = sign(accounts[account], string_to_sign(method, raw_path, query, headers, account))
    if not hmac.compare_digest(expected, signature):
        return AuthFailure(
            403,
            "AuthenticationFailed",
            "Server failed to authenticate the request. Make sure the value of Authorization header "
            "is formed correctly including the signature.",
        )
    return None

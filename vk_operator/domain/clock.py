"""The one wall clock of the domain: aware UTC datetimes (Kubernetes timestamps are UTC)."""

from __future__ import annotations

import datetime


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)

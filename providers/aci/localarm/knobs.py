"""What a test (or the command line) can set on the local ARM server. All fields are read live."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass
class Knobs:
    # ARM throttling: one token bucket per subscription for reads (GET) and one for writes
    # (PUT/PATCH/DELETE/POST). Defaults are ARM's documented per-subscription limits.
    throttling: bool = True
    reads_per_second: float = 25.0
    reads_burst: int = 250
    writes_per_second: float = 10.0
    writes_burst: int = 200

    # Quota per subscription and region (Location_ListUsage reports them; creates beyond them fail
    # with 409 ContainerGroupQuotaReached). Stopped groups do not count.
    quota_cores: int = 1000
    quota_container_groups: int = 5000
    # Regional capacity for one group (Linux, standard SKU); beyond it a create fails with
    # 409 ServiceUnavailable ("The requested resource ... is not available in the location").
    max_cpu_per_group: float = 4.0
    max_memory_gb_per_group: float = 16.0
    capacity_available: bool = True  # False: every create/update fails as above (transient capacity)

    # Simulated time, in seconds of the server's clock.
    pull_seconds: float = 0.5  # per container image, overridable by LOCALARM_PULL_SECONDS
    delete_seconds: float = 0.2  # Deleting -> gone
    restart_backoff_seconds: float = 1.0  # doubles per restart of a container ...
    restart_backoff_max_seconds: float = 10.0  # ... up to this
    # A Retry-After header on LRO responses (201/202 and operation status). None: no header, so
    # the SDK's poller uses its own polling_interval.
    lro_retry_after: int | None = None

    # Lists page at this many items (nextLink with $skiptoken).
    page_size: int = 100
    # Exec/attach passwords are single use and expire after this many (real) seconds.
    exec_session_ttl_seconds: float = 60.0
    # Require an Authorization header on ARM requests (off: SansIOHTTPPolicy sends none).
    require_auth: bool = False
    # If set, only these (subscription, resource group) pairs exist (else: every one does).
    resource_groups: set[tuple[str, str]] | None = field(default=None)

    def update(self, **changes: Any) -> None:
        names = {f.name for f in fields(self)}
        unknown = set(changes) - names
        if unknown:
            raise TypeError(f"unknown knobs: {sorted(unknown)}")
        for name, value in changes.items():
            setattr(self, name, value)

    def as_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.resource_groups is not None:
            out["resource_groups"] = sorted(list(pair) for pair in self.resource_groups)
        return out

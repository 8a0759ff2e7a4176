"""The Node side: registration, Lease heartbeat, status refresh."""

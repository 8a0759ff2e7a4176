"""The pod side: per-pod reconciliation against the provider, resync, deletion, events."""

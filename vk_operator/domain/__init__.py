"""The pure core: translation between Kubernetes objects and provider views. No I/O here."""

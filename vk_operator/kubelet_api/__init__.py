"""The kubelet HTTPS API (logs, pods, stats, resource metrics) and the operational HTTP endpoints."""

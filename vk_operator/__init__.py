"""vk-operator: a Virtual Kubelet in Python."""

__version__ = "0.1.0"

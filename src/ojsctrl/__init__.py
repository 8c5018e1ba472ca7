"""ojsctrl: a Kubernetes operator for Open Job Spec job servers and workers."""

__version__ = "0.1.0"

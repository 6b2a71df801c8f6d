"""Kubeforge: a labeled image dataset to a benchmarked, served model, from YAML alone."""

__version__ = "0.1.0"

API_GROUP = "kubeforge.io"
API_VERSION = "v1alpha1"
GROUP_VERSION = f"{API_GROUP}/{API_VERSION}"

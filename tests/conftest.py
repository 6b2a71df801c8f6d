"""Fixtures live in the package (kubeforge.testing) so benchmarks can reuse the servers."""

pytest_plugins = [
    "kubeforge.testing.fixtures",
]

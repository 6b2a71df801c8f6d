"""The `kubeforge` command line.

The command groups are imported only when needed: the runner, predict and chart modules
pull in pydantic models, numpy and more, about 0.3 s that a `kubeforge datasets import`
(timed against `dvc add` in benchmarks/data_versioning.py) should not pay. `main()`, the
console script, builds only the group named on the command line; `app` (tests, `--help`,
top-level commands) is the full application, built on first access.
"""

from __future__ import annotations

import importlib
import sys

import typer

# name -> (module with a Typer `app`, help)
_GROUPS: dict[str, tuple[str, str]] = {
    "crds": ("kubeforge.cli.crds", "Generate or check the CRDs from the API models."),
    "chart": ("kubeforge.cli.chart", "Sync the Helm chart with the generated CRDs and RBAC rules."),
    "datasets": ("kubeforge.cli.datasets", "Dataset tools: synthetic data, import, inspect."),
    "store": ("kubeforge.cli.store", "Look into the artifact store."),
    "models": ("kubeforge.cli.models", "The model registry: what a TrainingJob can train."),
    "step": ("kubeforge.cli.step", "Run one step (what a Kubernetes Job runs)."),
    "operator": ("kubeforge.cli.operator", "Run the Kubernetes operator (Kopf)."),
    "eval": ("kubeforge.cli.evaluate", "Evaluate results files: `eval coco` (exact pycocotools numbers, fast)."),
}
# Modules whose `register(app)` adds top-level commands (run, get, predict, ...).
_TOP_LEVEL = ("kubeforge.cli.runner", "kubeforge.cli.runs", "kubeforge.cli.predict", "kubeforge.cli.explain",
              "kubeforge.cli.report")


def build(only: str | None = None) -> typer.Typer:
    """The application: every group and command, or only the group `only`."""
    app = typer.Typer(
        no_args_is_help=True,
        help="Kubeforge: from a labeled image dataset to a benchmarked, served model.",
        pretty_exceptions_show_locals=False,  # locals can hold secrets
    )
    for name, (module, help_) in _GROUPS.items():
        if only is None or name == only:
            app.add_typer(importlib.import_module(module).app, name=name, help=help_)
    if only is None:
        for module in _TOP_LEVEL:
            importlib.import_module(module).register(app)
    return app


def __getattr__(name: str) -> typer.Typer:
    if name == "app":
        app = build()
        globals()["app"] = app  # built once
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    first = sys.argv[1] if len(sys.argv) > 1 else None
    build(first if first in _GROUPS else None)()


if __name__ == "__main__":
    main()

"""The `kubeforge` command line.

Every command is imported only when it runs: the runner, predict and chart modules pull in
pydantic models, numpy and more, which `kubeforge --help` and a `kubeforge datasets import`
(timed against `dvc add` in benchmarks/data_versioning.py) should not pay. `main()`, the
console script, runs a `LazyGroup`: its command list and one-line helps are the tables below,
and a command's module is imported when that command is resolved (to run it, or for its own
`--help`). `app` (tests, docs) is the full application, built on first access; a test checks
that both print the same commands with the same help.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

import typer
from typer.core import TyperGroup

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
# Top-level command -> (module registering it, the first paragraph of its help): what `--help`
# lists without importing the module (tests/test_cli_lazy.py keeps it equal to the commands' own).
_COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("kubeforge.cli.runner",
            "Validate the manifests, order them by their references, and run every step that changed."),
    "get": ("kubeforge.cli.runner",
            "List resources the way `kubectl get` does (the TrainingJob table is the experiments table)."),
    "describe": ("kubeforge.cli.runner", "Show one resource's spec, status, conditions and artifact URIs."),
    "stop": ("kubeforge.cli.runner",
             "End a served model's tritonserver process (phase Stopped); `run` starts it again."),
    "delete": ("kubeforge.cli.runner",
               "Forget a resource (and what it owns); a served model is stopped first. Store artifacts are kept,\n"
               "unless its spec.artifactPolicy is Delete (then every run's output goes, but never data still in "
               "use)."),
    "logs": ("kubeforge.cli.runner",
             "Print the output of a resource's last step run (or its tritonserver log with --server)."),
    "runs": ("kubeforge.cli.runs",
             "List a resource's runs (the current one marked *): id, phase, generation, times, store prefix."),
    "predict": ("kubeforge.cli.predict", "Apply a served model to images, folders, videos or S3 prefixes; print or "
                "write what it predicts."),
    "explain": ("kubeforge.cli.explain", "Describe a kind's fields (type, description, enum, default, bounds, "
                "required), like `kubectl explain`."),
    "report": ("kubeforge.cli.report",
               "Print where the Benchmark's report.html is: a file path (local store) or an s3:// URI."),
}
_HELP = "Kubeforge: from a labeled image dataset to a benchmarked, served model."


def build(only: str | None = None) -> typer.Typer:
    """The application: every group and command, or only the group `only`."""
    app = typer.Typer(
        no_args_is_help=True,
        help=_HELP,
        pretty_exceptions_show_locals=False,  # locals can hold secrets
    )
    for name, (module, help_) in _GROUPS.items():
        if only is None or name == only:
            app.add_typer(importlib.import_module(module).app, name=name, help=help_)
    if only is None:
        for module in _TOP_LEVEL:
            importlib.import_module(module).register(app)
    return app


def load_command(name: str) -> Any:
    """The click command `name` exactly as the full application has it, importing only its module."""
    outer = typer.Typer()
    if name in _GROUPS:
        module, help_ = _GROUPS[name]
        outer.add_typer(importlib.import_module(module).app, name=name, help=help_)
    else:
        importlib.import_module(_COMMANDS[name][0]).register(outer)
    return typer.main.get_group(outer).commands[name]


class LazyGroup(TyperGroup):
    """The top-level group: lists the tables' commands, imports a command's module on use."""

    _listing = False  # inside format_help: placeholders carrying the tables' help are enough

    def list_commands(self, ctx: Any) -> list[str]:
        return [*_COMMANDS, *_GROUPS]

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in _COMMANDS and cmd_name not in _GROUPS:
            return None
        if self._listing:
            help_ = _COMMANDS[cmd_name][1] if cmd_name in _COMMANDS else _GROUPS[cmd_name][1]
            return typer.core.TyperCommand(cmd_name, help=help_)
        if cmd_name not in self.commands:
            self.commands[cmd_name] = load_command(cmd_name)
        return self.commands[cmd_name]

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


def lazy_app() -> typer.Typer:
    """What `kubeforge` runs: the same commands as `build()`, each imported when it is used."""
    app = typer.Typer(cls=LazyGroup, no_args_is_help=True, help=_HELP, pretty_exceptions_show_locals=False)

    @app.callback()
    def _root() -> None:
        pass

    return app


def __getattr__(name: str) -> typer.Typer:
    if name == "app":
        app = build()
        globals()["app"] = app  # built once
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _defer_rich_markdown() -> None:
    """Let `rich.markdown` (and markdown-it behind it, ~80 ms) load on first use, not at start-up.

    typer's help renderer imports `rich.markdown.Markdown` at module level for markup mode
    "markdown"; Kubeforge uses mode "rich", so only a process that really renders Markdown
    pays: the placeholder's `Markdown` and any other attribute load the real module then.
    """
    if "rich.markdown" in sys.modules:
        return
    placeholder = types.ModuleType("rich.markdown")

    def real() -> types.ModuleType:
        if sys.modules.get("rich.markdown") is placeholder:
            del sys.modules["rich.markdown"]
        return importlib.import_module("rich.markdown")

    class Markdown:  # stands in for rich.markdown.Markdown until one is made
        def __new__(cls, *args: Any, **kwargs: Any) -> Any:
            return real().Markdown(*args, **kwargs)

    def attribute(name: str) -> Any:
        if name.startswith("__"):  # the import system probes __path__ and the like: not a use
            raise AttributeError(name)
        return getattr(real(), name)

    placeholder.Markdown = Markdown  # type: ignore[attr-defined]
    placeholder.__getattr__ = attribute  # type: ignore[method-assign]
    sys.modules["rich.markdown"] = placeholder


def main() -> None:
    _defer_rich_markdown()
    lazy_app()()


if __name__ == "__main__":
    main()

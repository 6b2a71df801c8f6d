"""The `kubeforge` command line."""

from __future__ import annotations

import typer

from kubeforge.cli import chart, crds, datasets, predict, runner, step, store
from kubeforge.cli import operator as operator_cli

app = typer.Typer(
    no_args_is_help=True,
    help="Kubeforge: from a labeled image dataset to a benchmarked, served model.",
    pretty_exceptions_show_locals=False,  # locals can hold secrets
)
app.add_typer(crds.app, name="crds", help="Generate or check the CRDs from the API models.")
app.add_typer(chart.app, name="chart", help="Sync the Helm chart with the generated CRDs and RBAC rules.")
app.add_typer(datasets.app, name="datasets", help="Dataset tools: synthetic data, import, inspect.")
app.add_typer(store.app, name="store", help="Look into the artifact store.")
app.add_typer(step.app, name="step", help="Run one step (what a Kubernetes Job runs).")
app.add_typer(operator_cli.app, name="operator", help="Run the Kubernetes operator (Kopf).")
runner.register(app)
predict.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

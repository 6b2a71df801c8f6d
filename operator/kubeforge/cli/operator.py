"""`kubeforge operator run`: the Kopf operator with its liveness endpoint and /metrics."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, help="Run the Kubernetes operator.")


@app.command("run")
def run(
    namespace: Annotated[
        list[str] | None,
        typer.Option("--namespace", "-n", help="Watch only these namespaces (default: KUBEFORGE_WATCH_NAMESPACES, "
                     "empty = cluster-wide)."),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the operator until interrupted (what the chart's Deployment runs)."""
    import kopf

    from kubeforge.operator.handlers import build
    from kubeforge.operator.settings import OperatorSettings

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = OperatorSettings()
    if namespace:
        settings = settings.model_copy(update={"watch_namespaces": list(namespace)})
    registry, ctx = build(settings)
    ctx.metrics.serve(settings.metrics_port)
    kopf.run(
        registry=registry,
        clusterwide=settings.clusterwide,
        namespaces=settings.watch_namespaces,
        liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz",
        peering_name=settings.peering_name,
    )

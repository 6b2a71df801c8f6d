"""`kubeforge operator run`: the Kopf operator with its liveness endpoint and /metrics.

`/healthz` (KUBEFORGE_HEALTH_PORT) is Kopf's liveness endpoint: it answers 200 while Kopf's reactor
runs, also on a paused standby replica (so the chart's probes keep it alive and Ready).
`/metrics` (KUBEFORGE_METRICS_PORT): see kubeforge.operator.metrics.
"""

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
    # Kopf serves /healthz with aiohttp, whose access log would print every probe of the kubelet.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    settings = OperatorSettings()
    if namespace:
        settings = settings.model_copy(update={"watch_namespaces": list(namespace)})
    registry, ctx = build(settings)
    ctx.metrics.track_peering(settings.peering_priority)
    ctx.metrics.serve(settings.metrics_port)
    logging.getLogger(__name__).info(
        "peering %r, priority %d (the live replica with the highest priority is active), lifetime %ds; "
        "/metrics on :%d, /healthz on :%d", settings.peering_name, settings.peering_priority,
        settings.peering_lifetime_seconds, settings.metrics_port, settings.health_port)
    kopf.run(
        registry=registry,
        clusterwide=settings.clusterwide,
        namespaces=settings.watch_namespaces,
        liveness_endpoint=f"http://0.0.0.0:{settings.health_port}/healthz",
        peering_name=settings.peering_name,
    )

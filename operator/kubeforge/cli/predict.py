"""`kubeforge predict SERVICE IMAGE...`: classify, detect or segment with a served model; print a table or JSON,
and write masks as PNGs with --masks-dir (instance segmentation: one per detection; semantic: one per image)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from kubeforge.models.meta import ModelMeta


class ServiceNotFoundError(RuntimeError):
    """SERVICE could not be resolved to an endpoint."""


def resolve_service(name: str, namespace: str = "default") -> tuple[str, str, ModelMeta]:
    """An InferenceService name -> (url, Triton model name, ModelMeta), from the local runner's state.

    The meta comes from the server itself (kubeforge embeds it in the model config), so
    predictions are decoded with exactly what is being served.
    """
    from kubeforge.local.state import StateError, service_endpoint
    from kubeforge.serving.client import fetch_meta

    try:
        endpoint = service_endpoint(name, namespace)
    except StateError as exc:
        raise ServiceNotFoundError(str(exc)) from None
    return endpoint.url, endpoint.model_name, fetch_meta(endpoint.url, endpoint.model_name)


def predict(
    service: Annotated[str, typer.Argument(help="The InferenceService name (the model name with --url).")],
    images: Annotated[list[Path], typer.Argument(help="Image files.", exists=True, dir_okay=False)],
    url: Annotated[str | None, typer.Option(help="Triton HTTP endpoint; skips the local state lookup.")] = None,
    model: Annotated[str | None, typer.Option(help="Triton model name (default: SERVICE).")] = None,
    meta: Annotated[Path | None, typer.Option(help="model_meta.json (default: read from the server).",
                                              exists=True, dir_okay=False)] = None,
    namespace: Annotated[str, typer.Option("--namespace", "-n")] = "default",
    threshold: Annotated[float, typer.Option(help="Detection score threshold.", min=0.0, max=1.0)] = 0.5,
    top_k: Annotated[int, typer.Option("--top-k", help="Classes shown per image.", min=1)] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    masks_dir: Annotated[Path | None, typer.Option(
        "--masks-dir", "--masks", help="Segmentation: write masks here as PNGs at the image's size. Instance "
        "segmentation: one per detection (<image>_<rank>_<class>.png); semantic: one per image (<image stem>.png, "
        "class indices of model_meta classes, 0 = __bg__).", file_okay=False)] = None,
) -> None:
    """Send images to a served model and show what it predicts (detections with masks for instance segmentation)."""
    from rich.console import Console
    from tritonclient.utils import InferenceServerException

    from kubeforge.serving.client import fetch_meta, predict_images, render_table, write_masks

    try:
        if url is None:
            url, model_name, served_meta = resolve_service(service, namespace)
            model_meta = ModelMeta.model_validate_json(meta.read_text()) if meta else served_meta
            model_name = model or model_name
        else:
            model_name = model or service
            model_meta = ModelMeta.model_validate_json(meta.read_text()) if meta else fetch_meta(url, model_name)
        if masks_dir is not None and model_meta.task not in ("instance-segmentation", "semantic-segmentation"):
            raise ValueError(f"--masks-dir: model {model_name!r} is {model_meta.task}; only segmentation "
                             "models predict masks")
        predictions = predict_images(url, model_name, model_meta, list(images), top_k=top_k, threshold=threshold)
        written = write_masks(predictions, masks_dir) if masks_dir is not None else []
    except (ServiceNotFoundError, InferenceServerException, ValueError, KeyError, OSError) as exc:
        # The user gets one line naming what failed, not a traceback.
        typer.echo(f"error: predict {service}: {exc}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps([p.to_dict() for p in predictions], indent=2))
    else:
        Console(width=120).print(render_table(predictions))
    for path in written:
        typer.echo(f"mask: {path}", err=as_json)


def register(app: typer.Typer) -> None:
    """Add predict to the top-level app."""
    app.command("predict")(predict)

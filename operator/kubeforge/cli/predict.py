"""`kubeforge predict SERVICE PATH...`: apply a served model to image files, folders, S3 prefixes and videos.

Requests go over gRPC when the endpoint has it (the local runner records it), through the pipeline of
`kubeforge.predict.engine`; the output is a table, JSON lines, COCO results or annotated images
(`kubeforge.predict.outputs`). The confidence threshold defaults to the one the model's Benchmark
found best (`kubeforge.predict.threshold`), and the command says which it used and why.
"""

from __future__ import annotations

import time
from collections import deque
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from kubeforge.models.meta import ModelMeta


class ServiceNotFoundError(RuntimeError):
    """SERVICE could not be resolved to an endpoint."""


@dataclass(frozen=True)
class Endpoint:
    url: str  # gRPC host:port when known, else the HTTP URL
    model_name: str
    store_uri: str | None = None  # local runner: where the served run's Benchmark records live
    experiment_prefix: str | None = None


def resolve_service(name: str, namespace: str = "default") -> Endpoint:
    """An InferenceService name -> its endpoint, from the local runner's state (gRPC preferred)."""
    from kubeforge.local.state import StateDir, StateError, resolve_state_dir, service_endpoint

    try:
        endpoint = service_endpoint(name, namespace)
        status = StateDir(resolve_state_dir()).get("InferenceService", namespace, name).resource.status
    except StateError as exc:
        raise ServiceNotFoundError(str(exc)) from None
    grpc_url = getattr(status, "grpc_url", None)
    return Endpoint(grpc_url or endpoint.url, endpoint.model_name, endpoint.store_uri, endpoint.experiment_prefix)


def _threshold(override: float | None, served: float | None, endpoint: Endpoint, namespace: str) -> Any:
    from kubeforge.predict.threshold import Threshold, benchmark_threshold, choose

    recorded = None
    if served is not None:
        recorded = Threshold(served, "F1-optimal on the model's Benchmark, recorded in the served config")
    elif override is None and endpoint.store_uri and endpoint.experiment_prefix:
        # Served before its Benchmark finished: look the record up now.
        from kubeforge.store import open_store

        recorded = benchmark_threshold(open_store(endpoint.store_uri), endpoint.experiment_prefix, namespace)
    return choose(override, recorded)


def _groups(paths: list[str]) -> list[tuple[str, list[str]]]:
    """PATHs in order as ("images", paths) runs and ("video", [path]) each: a video gets its own tracker,
    frame rate and annotated MP4."""
    from kubeforge.predict.sources import is_video_path

    groups: list[tuple[str, list[str]]] = []
    for raw in paths:
        if not raw.startswith("s3://") and is_video_path(raw) and Path(raw).is_file():
            groups.append(("video", [raw]))
        elif groups and groups[-1][0] == "images":
            groups[-1][1].append(raw)
        else:
            groups.append(("images", [raw]))
    return groups


def predict(
    service: Annotated[str, typer.Argument(help="The InferenceService name (the model name with --url).")],
    paths: Annotated[list[str], typer.Argument(
        help="Image files, folders (recursive), videos, or s3://bucket/prefix.", metavar="PATH...")],
    url: Annotated[str | None, typer.Option(
        help="Triton endpoint, skipping the local state lookup: host:port or grpc://host:port (gRPC), "
        "http://host:port (HTTP).")] = None,
    model: Annotated[str | None, typer.Option(help="Triton model name (default: SERVICE).")] = None,
    meta: Annotated[Path | None, typer.Option(help="model_meta.json (default: read from the server).",
                                              exists=True, dir_okay=False)] = None,
    namespace: Annotated[str, typer.Option("--namespace", "-n")] = "default",
    threshold: Annotated[float | None, typer.Option(
        help="Detection score threshold (default: the F1-optimal one of the model's Benchmark, else 0.5).",
        min=0.0, max=1.0)] = None,
    top_k: Annotated[int, typer.Option("--top-k", help="Classes shown per image.", min=1)] = 3,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table | jsonl | coco | annotated | dataset (a new "
                                     "DatasetVersion of the predictions).")] = "table",
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="jsonl: a file (default stdout); coco: the results file; annotated: a folder "
        "(images as <name>, videos as <stem>.mp4); dataset: the dataset's name (a new version of it).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON array (small inputs).")] = False,
    masks_dir: Annotated[Path | None, typer.Option(
        "--masks-dir", "--masks", help="Segmentation: write masks here as PNGs at the image's size. Instance "
        "segmentation: one per detection (<image>_<rank>_<class>.png); semantic: one per image (<image stem>.png, "
        "class indices of model_meta classes, 0 = __bg__).", file_okay=False)] = None,
    rle: Annotated[bool, typer.Option("--rle", help="jsonl/--json: masks as COCO RLE in the JSON.")] = False,
    coco_gt: Annotated[Path | None, typer.Option(
        "--coco-gt", help="coco: take image and category ids from this COCO ground truth (by file and class "
        "name).", exists=True, dir_okay=False)] = None,
    skip_errors: Annotated[bool, typer.Option(
        "--skip-errors", help="Skip unreadable images and list them at the end, instead of stopping.")] = False,
    track: Annotated[str | None, typer.Option(
        "--track", help="Videos: track objects across frames (bytetrack | botsort).")] = None,
    stride: Annotated[int, typer.Option(help="Videos: predict every N-th frame.", min=1)] = 1,
    concurrency: Annotated[int, typer.Option(help="Requests in flight.", min=1)] = 8,
) -> None:
    """Apply a served model to images, folders, videos or S3 prefixes; print or write what it predicts."""
    if fmt == "dataset":
        given = {"--url": url, "--model": model, "--meta": meta, "--track": track, "--masks-dir": masks_dir,
                 "--coco-gt": coco_gt, "--rle": rle or None, "--json": as_json or None,
                 "--stride": stride if stride != 1 else None}
        _to_dataset(service, paths, output, namespace, threshold, skip_errors, [k for k, v in given.items() if v])
        return
    from rich.console import Console
    from tritonclient.utils import InferenceServerException

    from kubeforge.predict import engine, outputs, sources

    err = Console(stderr=True, soft_wrap=True)  # file names whole, never wrapped
    written: list[Path] = []
    skipped: list[str] = []
    done = 0
    start = time.perf_counter()
    writer: Any = None
    backend: Any = None
    videos: list[Path] = []  # annotated MP4s written
    failure: str | None = None
    try:
        if track is not None and track not in ("bytetrack", "botsort"):
            raise ValueError(f"--track {track!r}: expected bytetrack or botsort")
        if track is not None and not any(kind == "video" for kind, _ in _groups(paths)):
            raise ValueError("--track: tracking follows objects across a video's frames; no PATH is a video file")
        if as_json:
            fmt = "json"
        endpoint = Endpoint(url, model or service) if url else resolve_service(service, namespace)
        if url is None and model:
            endpoint = Endpoint(endpoint.url, model, endpoint.store_uri, endpoint.experiment_prefix)
        given_meta = ModelMeta.model_validate_json(meta.read_text()) if meta else None
        backend = engine.TritonBackend(endpoint.url, endpoint.model_name, given_meta, concurrency=concurrency)
        model_meta = backend.meta
        if masks_dir is not None and model_meta.task not in ("instance-segmentation", "semantic-segmentation"):
            raise ValueError(f"--masks-dir: model {endpoint.model_name!r} is {model_meta.task}; only segmentation "
                             "models predict masks")
        chosen = _threshold(threshold, backend.threshold, endpoint, namespace)
        if model_meta.task in ("object-detection", "instance-segmentation"):
            err.print(f"{chosen.describe()}", highlight=False)
        writer = outputs.writer(fmt, output, model_meta, masks_as_rle=rle, coco_gt=coco_gt)
        many = len(paths) > 1 or any(p.startswith("s3://") or Path(p).is_dir() or sources.is_video_path(p)
                                     for p in paths)
        progress = _progress(err) if many else None

        def on_error(item: engine.Item, exc: Exception) -> None:
            skipped.append(str(exc))
            if progress is not None:
                progress.update(task, advance=1)

        with progress if progress else nullcontext():
            for kind, group in _groups(paths):
                pending: deque[engine.Item] = deque()
                if kind == "video":
                    stream, task = _video_stream(backend, group[0], fmt, output, track, stride, chosen.value,
                                                 top_k, concurrency, progress, videos)
                else:
                    task = progress.add_task("predict", total=sources.count(group)) if progress else None
                    stream = engine.predict_stream(
                        backend, _remembered(sources.items(group), pending), threshold=chosen.value, top_k=top_k,
                        concurrency=concurrency, on_error=on_error if skip_errors else None)
                for pred in stream:
                    if masks_dir is not None:
                        from kubeforge.serving.client import write_masks

                        written += write_masks([pred], masks_dir)
                    if kind == "images" or fmt != "annotated":  # a video's annotated frames go to its MP4
                        writer.write(pred, _item_of(pred, pending) if kind == "images" else None)
                    done += 1
                    if progress is not None:
                        progress.update(task, advance=1)
    except (ServiceNotFoundError, InferenceServerException, ValueError, KeyError, OSError, RuntimeError) as exc:
        failure = str(exc)
    finally:
        if writer is not None:  # what was predicted before a failure is written, not lost
            written += writer.close()
        written += videos
        if backend is not None:
            backend.close()
    elapsed = time.perf_counter() - start
    folders = sorted({str(p.parent) for p in written})
    if len(written) > 5 and len(folders) == 1:  # a folder of annotated images or masks: one line
        err.print(f"wrote: {len(written)} files to {folders[0]}", highlight=False)
    else:
        for path in written:
            err.print(f"wrote: {path}", highlight=False)
    if skipped:
        err.print(f"skipped {len(skipped)} unreadable input(s):", highlight=False)
        for line in skipped:
            err.print(f"  {line}", highlight=False)
    if done > 1:
        what = "images and frames" if any(kind == "video" for kind, _ in _groups(paths)) else "images"
        rate = done / max(elapsed, 1e-9)
        err.print(f"{done} {what} in {elapsed:.1f} s: {rate:.1f} {what}/s", highlight=False)
    if failure is not None:
        # The user gets one line naming what failed, not a traceback.
        typer.echo(f"error: predict {service}: {failure}", err=True)
        raise typer.Exit(1)


def _to_dataset(service: str, paths: list[str], output: Path | None, namespace: str, threshold: float | None,
                skip_errors: bool, unused: list[str]) -> None:
    """--format dataset: the PredictionJob step, run here (`kubeforge.cli.predict_dataset`)."""
    from kubeforge.cli.predict_dataset import DatasetOutputError, to_dataset
    from kubeforge.steps.errors import StepFailedError

    try:
        if unused:
            raise DatasetOutputError(f"{', '.join(unused)}: not with --format dataset (it predicts every image or "
                                     "frame of an InferenceService of the local state, as a PredictionJob does)")
        to_dataset(service, paths, str(output) if output is not None else None, namespace, threshold, skip_errors,
                   typer.echo)
    except (ServiceNotFoundError, DatasetOutputError, StepFailedError, ValueError) as exc:
        typer.echo(f"error: predict {service}: {exc}", err=True)
        raise typer.Exit(1) from None


def _video_stream(backend: Any, path: str, fmt: str, output: Path | None, track: str | None, stride: int,
                  threshold: float, top_k: int, concurrency: int, progress: Any, videos: list[Path]) -> Any:
    """One video's predictions (its own tracker; with --format annotated, its MP4 in the output folder)."""
    from kubeforge.predict import video

    info = video.probe(path)
    tracker = None
    if track is not None:
        from kubeforge.predict.tracking import Tracker  # boxmot only when --track is given

        tracker = Tracker(track, (info.fps or 30.0) / stride)  # type: ignore[arg-type]  # checked above
    annotated = None
    if fmt == "annotated" and output is not None:
        annotated = output / f"{Path(path).stem}.mp4"
        videos.append(annotated)
    total = -(-info.frames // stride) if info.frames else None
    task = progress.add_task(Path(path).name, total=total) if progress else None
    stream = video.predict_video(backend, path, threshold=threshold, tracker=tracker, annotated=annotated,
                                 stride=stride, top_k=top_k, concurrency=concurrency)
    return stream, task


def _remembered(source: Any, pending: deque[Any]) -> Any:
    """The items, each kept until its prediction comes back (writers that draw on the image need it);
    at most the pipeline's window is pending at a time."""
    for item in source:
        pending.append(item)
        yield item


def _item_of(pred: Any, pending: deque[Any]) -> Any:
    """The Item a prediction answers; items before it were skipped (predictions come in input order)."""
    while pending:
        item = pending.popleft()
        if item.name == pred.image:
            return item
    raise RuntimeError(f"{pred.image}: a prediction for an input that was not sent")


def _progress(console: Any) -> Any:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=False)


def register(app: typer.Typer) -> None:
    """Add predict to the top-level app."""
    app.command("predict")(predict)

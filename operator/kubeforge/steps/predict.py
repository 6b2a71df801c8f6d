"""Step `predict`: apply a PredictionJob's model to its input; the predictions become a DatasetVersion.

Predictions are never lost: they go to the store as they are made, in parts
(`<output prefix>/parts/NNNNNN.jsonl`, each written whole), with `progress.json` beside them (images done
of total, images/s). A failure (an unreadable image with onInvalidImage Fail, a service that went away)
keeps every part written; the next attempt of the same run (a pod retry, or `kubeforge run` again) reads
them back and predicts only the images they do not hold. Once every image is predicted the parts become
one version of `spec.output.dataset` (`kubeforge.predict.to_dataset`), whose parent is the input version.
"""

from __future__ import annotations

import io
import json
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image
from pydantic import ValidationError

from kubeforge.api.dataset_operations import ParentVersion
from kubeforge.datasets.formats.common import mask_to_rle
from kubeforge.datasets.integrity import IntegrityError, guarded_write
from kubeforge.datasets.manifest import Manifest
from kubeforge.datasets.sources import SourceError, open_source
from kubeforge.datasets.versions import CorruptManifestError, load_manifest
from kubeforge.models.meta import ModelMeta
from kubeforge.models.preprocess import load_rgb
from kubeforge.predict import to_dataset
from kubeforge.predict.engine import Item, OnnxBackend, TritonBackend, predict_stream
from kubeforge.predict.sources import IMAGE_EXTENSIONS, is_image
from kubeforge.predict.threshold import Threshold, benchmark_threshold, choose
from kubeforge.serving.client import Prediction
from kubeforge.steps.errors import StepFailedError
from kubeforge.steps.spec import CLI_CALLER, PredictRun
from kubeforge.store import Store, StoreError, layout, open_store

PART_EVERY = 64  # predictions per part at most
PART_SECONDS = 5.0  # and a part at least this often while predicting
PARTS = "parts"
PREDICTIONS = "predictions.jsonl"  # every part joined, in input order, once the run succeeded
THRESHOLD_FILE = "threshold.json"  # the threshold the run's first attempt chose; later attempts keep it


@dataclass
class Where:
    """What a prediction line records about its image (filled in when the image is read)."""

    file_name: str
    blob: str | None = None
    bytes: int = 0
    tags: list[str] = field(default_factory=list)


class Parts:
    """The run's predictions in the store: the parts of earlier attempts, and new ones as they come."""

    def __init__(self, store: Store, prefix: str) -> None:
        self.store, self.prefix = store, f"{prefix.rstrip('/')}/{PARTS}"
        self.done: dict[str, dict[str, Any]] = {}
        self._next = 0
        for key in sorted(store.list(self.prefix + "/")):
            if not key.endswith(".jsonl"):
                continue
            for text in store.get_bytes(key).decode().splitlines():
                if text.strip():
                    line = json.loads(text)
                    self.done[line["image"]] = line
            self._next = max(self._next, int(key.rsplit("/", 1)[1].split(".")[0]) + 1)
        self.resumed = len(self.done)
        self._pending: list[dict[str, Any]] = []
        self._last = time.monotonic()

    def add(self, line: dict[str, Any]) -> bool:
        """Record one prediction; True when a part was written."""
        self.done[line["image"]] = line
        self._pending.append(line)
        if len(self._pending) >= PART_EVERY or time.monotonic() - self._last >= PART_SECONDS:
            self.flush()
            return True
        return False

    def flush(self) -> None:
        self._last = time.monotonic()
        if not self._pending:
            return
        text = "".join(json.dumps(line, sort_keys=True) + "\n" for line in self._pending)
        self.store.put_bytes(f"{self.prefix}/{self._next:06d}.jsonl", text.encode())
        self._next += 1
        self._pending = []


class Progress:
    """progress.json: images done of total and this attempt's throughput (the runtimes mirror it)."""

    def __init__(self, store: Store, prefix: str, total: int | None, resumed: int) -> None:
        self.store, self.key = store, f"{prefix.rstrip('/')}/{layout.PROGRESS}"
        self.total, self.resumed, self.skipped = total, resumed, 0
        self.t0 = time.monotonic()

    def snapshot(self, done: int, phase: str, message: str = "") -> dict[str, Any]:
        seconds = time.monotonic() - self.t0
        rate = round((done - self.resumed) / seconds, 2) if seconds > 0 and done > self.resumed else None
        of = f"/{self.total}" if self.total is not None else ""
        summary = f"{done}{of}" + (f" ({rate:g} img/s)" if rate else "")
        if self.skipped:
            summary += f", {self.skipped} skipped"
        return {"phase": phase, "done": done, "total": self.total, "skipped": self.skipped,
                "imagesPerSecond": rate, "summary": summary, "message": message[:500]}

    def write(self, done: int, phase: str = "Predicting", message: str = "") -> dict[str, Any]:
        data = self.snapshot(done, phase, message)
        try:
            self.store.put_bytes(self.key, json.dumps(data, indent=2, sort_keys=True).encode())
        except StoreError:
            pass  # progress is a view; the predictions themselves are what must not be lost
        return data


def _meta(store: Store, prefix: str, who: str) -> ModelMeta:
    key = f"{prefix}/{layout.MODEL_META}"
    try:
        return ModelMeta.model_validate_json(store.get_bytes(key))
    except KeyError:
        raise StepFailedError(f"{who}: no {layout.MODEL_META} at {store.url(key)}") from None
    except ValidationError as exc:
        raise StepFailedError(f"{who}: {store.url(key)} is not a valid model meta: {exc}") from None


def open_backend(spec: PredictRun, store: Store, tmp: Path) -> tuple[Any, str]:
    """(the backend, its description for messages)."""
    model = spec.model
    meta = _meta(store, model.experiment_prefix, f"TrainingJob {model.training_job!r}")
    if model.inference_service:
        assert model.url and model.model_name, "the core resolves a Ready service's endpoint"
        return TritonBackend(model.url, model.model_name, meta), f"InferenceService {model.inference_service} " \
                                                                  f"({model.url})"
    key = f"{model.experiment_prefix}/{layout.ONNX_EXPORT}"
    path = tmp / "model.onnx"
    try:
        store.get_file(key, path)
    except KeyError:
        raise StepFailedError(f"TrainingJob {model.training_job!r} has no ONNX export at {store.url(key)}; did it "
                              "succeed with export: [onnx]?") from None
    return OnnxBackend(path, meta), f"TrainingJob {model.training_job} (ONNX Runtime)"


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


class Inputs:
    """The input as Items, and where each image is (its blob is stored when it is read)."""

    def __init__(self, spec: PredictRun, store: Store, tmp: Path) -> None:
        self.spec, self.store, self.tmp = spec, store, tmp
        self.where: dict[str, Where] = {}
        self.parent: Manifest | None = None
        self.total: int | None = None
        self.skipped: dict[str, str] = {}
        self._lock = threading.Lock()

    def _guard(self, name: str, read: Callable[[], Image.Image]) -> Callable[[], Image.Image]:
        """Skip semantics: an unreadable image is recorded and stands in as a 1x1 image (its prediction is
        dropped); Fail semantics: the ValueError naming it ends the run."""
        def load() -> Image.Image:
            try:
                return read()
            except (ValueError, OSError) as exc:
                if self.spec.spec.on_invalid_image != "Skip":
                    raise ValueError(str(exc)) from exc
                with self._lock:
                    self.skipped[name] = str(exc)
                return Image.new("RGB", (1, 1))
        return load

    def items(self) -> list[Item] | Iterator[Item]:
        spec = self.spec.spec.input
        if spec.dataset_version is not None:
            return self._version_items()
        if spec.source is not None:
            return self._source_items(spec.source.uri)
        return self._video_items(spec.video or "")

    def _version_items(self) -> list[Item]:
        ref = self.spec.dataset
        assert ref is not None, "the core resolves spec.input.datasetVersion"
        try:
            self.parent = load_manifest(self.store, ref.dataset, ref.digest)
        except KeyError:
            raise StepFailedError(f"DatasetVersion {ref.name} ({ref.dataset}@{ref.digest[:12]}): no such version "
                                  f"in {self.store.uri}") from None
        out = []
        for im in self.parent.images:
            self.where[im.file_name] = Where(im.file_name, im.blob, im.bytes, list(im.tags))

            def read(blob: str = im.blob, name: str = im.file_name) -> Image.Image:
                try:
                    return load_rgb(self.store.get_blob(blob))
                except KeyError:
                    raise ValueError(f"{name}: its blob {blob[:12]} is missing from {self.store.uri}") from None
                except ValueError as exc:
                    raise ValueError(f"{name} (blob {blob[:12]}): {str(exc).removeprefix('<bytes>: ')}") from None
            out.append(Item(name=im.file_name, load=self._guard(im.file_name, read)))
        self.total = len(out)
        return out

    def _source_items(self, uri: str) -> list[Item]:
        try:
            source = open_source(uri)
            files = [f for f in source.list() if is_image(f)]
        except SourceError as exc:
            raise StepFailedError(f"spec.input.source.uri: {exc}") from None
        if not files:
            raise StepFailedError(f"spec.input.source.uri: no image files "
                                  f"({', '.join(sorted(IMAGE_EXTENSIONS))}) under {source.uri}")
        out = []
        for rel in files:
            self.where[rel] = Where(rel)

            def read(rel: str = rel) -> Image.Image:
                data = source.read(rel)
                try:
                    img = load_rgb(data)
                except ValueError as exc:
                    raise ValueError(f"{source.where(rel)}: {str(exc).removeprefix('<bytes>: ')}") from None
                self._stored(rel, data)
                return img
            out.append(Item(name=rel, load=self._guard(rel, read)))
        self.total = len(out)
        return out

    def _stored(self, name: str, data: bytes) -> None:
        blob = self.store.put_blob(data)
        with self._lock:
            self.where[name].blob, self.where[name].bytes = blob, len(data)

    def _video_items(self, uri: str) -> Iterator[Item]:
        try:
            from kubeforge.predict.video import frame_items  # type: ignore[import-not-found, unused-ignore]
        except ImportError as exc:
            raise StepFailedError(f"spec.input.video: video decoding is not available here ({exc})") from None
        path = Path(uri)
        if uri.startswith("s3://"):
            folder, name = uri.rsplit("/", 1)
            path = self.tmp / name
            try:
                path.write_bytes(open_source(folder + "/").read(name))
            except (SourceError, FileNotFoundError) as exc:
                raise StepFailedError(f"spec.input.video: {uri}: {exc}") from None
        stem = path.stem
        for item in frame_items(path):
            file_name = f"{stem}/frame_{item.frame if item.frame is not None else 0:06d}.png"
            self.where[item.name] = Where(file_name)

            def read(item: Item = item) -> Image.Image:
                img = item.load()
                self._stored(item.name, _png(img))
                return img
            yield Item(name=item.name, load=self._guard(item.name, read), frame=item.frame, timestamp=item.timestamp)


def line_of(pred: Prediction, where: Where) -> dict[str, Any]:
    """One prediction line (`to_dataset` documents it)."""
    line = pred.to_dict()
    for det, out in zip(pred.detections, line["detections"], strict=True):
        if det.mask is not None:
            out["segmentation"] = mask_to_rle(det.mask)
            out["mask_pixels"] = int(det.mask.sum())
    assert where.blob is not None, "an image's blob is known once it was read"
    line.update(fileName=where.file_name, blob=where.blob, bytes=where.bytes, tags=where.tags)
    return line


def _who(spec: PredictRun) -> str:
    if spec.caller == CLI_CALLER:
        return f"kubeforge predict --output {spec.output_dataset}"
    return f"PredictionJob {spec.namespace}/{spec.name}"


def run(spec: PredictRun) -> dict[str, Any]:
    who = _who(spec)
    try:
        store = open_store(spec.store)
        store.check()
        with ExitStack() as stack:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kubeforge-predict-")))
            guarded = stack.enter_context(guarded_write(store, who))
            return _run(spec, guarded, tmp, who)
    except (StoreError, SourceError, IntegrityError, CorruptManifestError,
            to_dataset.PredictionDatasetError) as exc:
        raise StepFailedError(f"{who}: {exc}") from None


def choose_threshold(spec: PredictRun, store: Store, backend: Any) -> Threshold:
    """spec.threshold, else the F1-optimal threshold the model's Benchmark recorded (for a served model, the
    one in its served config; else looked up in the store), else the default. A run keeps the threshold its
    first attempt chose: predictions resumed from parts were filtered with it, and a Benchmark finishing in
    between must not split one version across two thresholds."""
    key = f"{spec.output_prefix.rstrip('/')}/{THRESHOLD_FILE}"
    try:
        kept = store.get_json(key)
        return Threshold(float(kept["value"]), str(kept["source"]))
    except (KeyError, TypeError, ValueError):
        pass  # the first attempt (or a record this version cannot read: choose again)
    recorded = None
    if spec.spec.threshold is None:
        served = getattr(backend, "threshold", None)
        if served is not None:
            recorded = Threshold(served, f"F1-optimal on the model's Benchmark, recorded in InferenceService "
                                         f"{spec.model.inference_service}'s served config")
        else:
            recorded = benchmark_threshold(store, spec.model.experiment_prefix, spec.namespace)
    given_as = "--threshold" if spec.caller == CLI_CALLER else "spec.threshold"
    chosen = choose(spec.spec.threshold, recorded, given_as=given_as)
    store.put_json(key, {"value": chosen.value, "source": chosen.source})
    return chosen


def _run(spec: PredictRun, store: Store, tmp: Path, who: str) -> dict[str, Any]:
    backend, model_label = open_backend(spec, store, tmp)
    try:
        to_dataset.manifest_task(backend.meta.task)  # a task a version cannot hold fails before any work
    except to_dataset.PredictionDatasetError:
        backend.close()
        raise
    chosen = choose_threshold(spec, store, backend)
    threshold = chosen.value
    print(f"{who}: {chosen.describe()}", file=sys.stderr)
    inputs = Inputs(spec, store, tmp)
    items = inputs.items()
    parts = Parts(store, spec.output_prefix)
    progress = Progress(store, spec.output_prefix, inputs.total, parts.resumed)
    todo = (item for item in items if item.name not in parts.done)
    if parts.resumed:
        print(f"{who}: continuing: {parts.resumed} images predicted by an earlier attempt of run {spec.run_id}",
              file=sys.stderr)
    progress.write(len(parts.done))
    try:
        for pred in predict_stream(backend, todo, threshold=threshold):
            if pred.image in inputs.skipped:
                progress.skipped = len(inputs.skipped)
                continue
            if parts.add(line_of(pred, inputs.where[pred.image])):
                progress.write(len(parts.done))
    except (ValueError, RuntimeError) as exc:
        parts.flush()
        kept = len(parts.done)
        message = (f"{who}: {model_label}: {exc}; {kept} predictions kept at "
                   f"{store.url(parts.prefix)}/ (a rerun continues from them)")
        progress.write(kept, "Failed", message)
        raise StepFailedError(message) from None
    except BaseException:  # stopped (SIGTERM, Ctrl-C): what was predicted is kept
        parts.flush()
        progress.write(len(parts.done), "Stopped", "stopped")
        raise
    finally:
        backend.close()
    parts.flush()
    progress.skipped = len(inputs.skipped)
    final = progress.write(len(parts.done), "Succeeded")
    order = list(inputs.where)
    lines = [parts.done[name] for name in order if name in parts.done]
    return _version(spec, store, inputs, lines, backend.meta, chosen, parts, final)


def _version(spec: PredictRun, store: Store, inputs: Inputs, lines: list[dict[str, Any]], meta: ModelMeta,
             chosen: Threshold, parts: Parts, progress: dict[str, Any]) -> dict[str, Any]:
    # Images of earlier attempts were stored then; a `datasets gc` in between may have taken one.
    missing = [line["fileName"] for line in lines[: parts.resumed]
               if not store.exists(layout.blob_key(line["blob"]))]
    if missing:
        raise StepFailedError(f"images predicted by an earlier attempt are no longer in the store ({missing[:5]}); "
                              "delete the run's parts to predict them again")
    manifest = to_dataset.manifest_of(spec.output_dataset, meta.task, meta.classes, lines, inputs.parent)
    parents = [ParentVersion(name=spec.dataset.name, dataset=spec.dataset.dataset, digest=spec.dataset.digest)] \
        if spec.dataset is not None else []
    model = spec.model
    made_by = {"command": {"name": spec.caller, "namespace": spec.namespace, "run": spec.run_id}} \
        if spec.caller == CLI_CALLER else \
        {"predictionJob": {"namespace": spec.namespace, "name": spec.name, "run": spec.run_id}}
    source = {**made_by,
              "model": {"trainingJob": model.training_job, "run": model.training_run,
                        "inferenceService": model.inference_service, "experimentPrefix": model.experiment_prefix,
                        "task": meta.task},
              "threshold": chosen.value, "thresholdSource": chosen.source, "input": spec.spec.input.dump()}
    digest, source_key = to_dataset.write_predictions_version(store, manifest, source, parents)
    joined = f"{spec.output_prefix.rstrip('/')}/{PREDICTIONS}"
    store.put_bytes(joined, "".join(json.dumps(line, sort_keys=True) + "\n" for line in lines).encode())
    objects = len(manifest.annotations) if manifest.task != "classification" else \
        sum(1 for im in manifest.images if im.category_id is not None)
    print(f"{spec.output_dataset}@{digest[:12]}: {len(manifest.images)} images, {objects} predictions "
          f"({chosen.describe()}), {len(inputs.skipped)} skipped", file=sys.stderr)
    return {
        "threshold": chosen.value, "thresholdSource": chosen.source,
        "progress": {k: progress[k] for k in ("done", "total", "skipped", "imagesPerSecond", "summary")},
        "predictionsUri": store.url(joined),
        "dataset": spec.output_dataset, "digest": digest,
        "manifestUri": store.url(layout.dataset_manifest_key(spec.output_dataset, digest)),
        "sourceUri": store.url(source_key),
        "parents": [p.dump() for p in parents],
        "images": len(manifest.images), "predictions": objects,
        "skipped": [{"file": name, "reason": reason} for name, reason in sorted(inputs.skipped.items())],
        "resumed": parts.resumed,
    }

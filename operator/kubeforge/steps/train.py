"""The train step: a TrainingJob's run spec in, an experiment in the store out.

Order of writes (a reader trusts what it sees): run_spec.json, hyperparameters.yaml and
train_val_split.json first; checkpoints, progress.json and metrics.jsonl while training;
the export and model_meta.json after; experiment_info.json last, so its presence means
success. A rerun with the same run spec returns the recorded result; a run interrupted
after some epochs resumes from checkpoints/last.pt.

Under torchrun (WORLD_SIZE > 1) every process runs this step: all of them train their shard,
rank 0 alone writes to the experiment prefix, and the others wait for its result
(kubeforge_trainers.distributed).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

import kubeforge
from kubeforge.api.common import now_rfc3339
from kubeforge.api.training_job import TrainingJobStatus
from kubeforge.atomic_file import atomic_write_bytes
from kubeforge.datasets.manifest import Manifest
from kubeforge.datasets.versions import load_manifest
from kubeforge.models import catalog
from kubeforge.steps.spec import TrainRun
from kubeforge.store import Store, layout, open_store

ENV_CACHE_DIR = "KUBEFORGE_CACHE_DIR"


class StoreSink:
    """The trainers' ArtifactSink onto an experiment prefix in the store."""

    def __init__(self, store: Store, prefix: str) -> None:
        self.store = store
        self.prefix = prefix.rstrip("/")

    def key(self, rel: str) -> str:
        return f"{self.prefix}/{rel}"

    def put_bytes(self, rel: str, data: bytes) -> None:
        self.store.put_bytes(self.key(rel), data)

    def put_file(self, rel: str, path: Path) -> None:
        self.store.put_file(self.key(rel), path)

    def get_bytes(self, rel: str) -> bytes | None:
        try:
            return self.store.get_bytes(self.key(rel))
        except KeyError:
            return None


def run_spec_digest(spec: TrainRun, split_method: str | None = None) -> str:
    """sha256 of the run spec's canonical JSON: equal digests mean the same run. `split_method`: what
    spec.split.method `auto` resolved to on this version (random or dataset); the digest names that, so
    a run recorded before `auto` existed (method random, on a version without split tags) is this run."""
    dumped = spec.model_dump(mode="json", by_alias=True)
    if split_method and dumped["spec"]["split"]["method"] == "auto":
        dumped["spec"]["split"]["method"] = split_method
    text = json.dumps(dumped, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def cache_dir() -> Path:
    return Path(os.environ.get(ENV_CACHE_DIR) or Path.home() / ".cache" / "kubeforge").expanduser()


def download_images(store: Store, manifest: Manifest, names: set[str], root: Path, progress: Any) -> int:
    """Fetch the blobs of the named images into `root` (store layout); returns how many were fetched.

    A blob already there with the manifest's size is kept: blobs are content-addressed, so a
    name can only ever hold those bytes.
    """
    from kubeforge_trainers.data import blob_path

    wanted = {img.blob: img for img in manifest.images if img.file_name in names}
    todo = [img for blob, img in sorted(wanted.items())
            if not (blob_path(root, blob).is_file() and blob_path(root, blob).stat().st_size == img.bytes)]
    for img in progress.track(todo, len(todo), "download images"):
        data = store.get_blob(img.blob)
        if hashlib.sha256(data).hexdigest() != img.blob:
            raise ValueError(f"{store.url(layout.blob_key(img.blob))}: content does not match its hash "
                             f"(image {img.file_name!r})")
        atomic_write_bytes(blob_path(root, img.blob), data)
    return len(todo)


def versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch
    import torchvision

    return {"python": platform.python_version(), "kubeforge": kubeforge.__version__, "torch": torch.__version__,
            "torchvision": torchvision.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}


def _write_tensorboard(history: list[dict[str, Any]], logdir: Path) -> bool:
    """TensorBoard scalars from the metrics log, when tensorboard is installed (optional)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return False
    with SummaryWriter(str(logdir)) as writer:
        for record in history:
            for name, value in record["metrics"].items():
                writer.add_scalar(name, value, int(record["epoch"]))
    return True


def _device(spec: TrainRun) -> str:
    import torch

    return "cuda" if spec.spec.resources.gpu > 0 and torch.cuda.is_available() else "cpu"


def run(spec: TrainRun) -> dict[str, Any]:
    from kubeforge_trainers import distributed

    dist_env = distributed.setup(_device(spec))
    try:
        return _run(spec, dist_env)
    finally:
        distributed.teardown()


def _run(spec: TrainRun, dist_env: Any) -> dict[str, Any]:
    from kubeforge.steps.errors import StepFailedError
    from kubeforge_trainers import distributed

    started, t0 = now_rfc3339(), time.perf_counter()
    store = open_store(spec.store)
    store.check()
    sink = StoreSink(store, spec.experiment_prefix)
    manifest = load_manifest(store, spec.dataset.dataset, spec.dataset.digest)
    digest = run_spec_digest(spec, _auto_split_method(spec, manifest))
    info_key = sink.key(layout.EXPERIMENT_INFO)
    if store.exists(info_key):
        info = store.get_json(info_key)
        if info.get("runSpecDigest") == digest:
            return info["result"]
    previous = sink.get_bytes(layout.RUN_SPEC)
    same_run = previous is not None and json.loads(previous).get("runSpecDigest") == digest
    # Every rank has read the old state before rank 0 starts replacing it.
    distributed.barrier()
    if not same_run and dist_env.is_main:
        # A different spec for this TrainingJob: its old artifacts must not mix with the new ones.
        for key in list(store.list(sink.prefix + "/")):
            store.delete(key)
    try:
        return _train(spec, store, sink, manifest, digest, same_run, started, t0, dist_env)
    except FloatingPointError as exc:
        raise StepFailedError(str(exc)) from exc
    except RuntimeError as exc:
        from kubeforge_trainers.models import PretrainedWeightsError

        if isinstance(exc, PretrainedWeightsError):
            raise StepFailedError(str(exc)) from exc
        raise


def _auto_split_method(spec: TrainRun, manifest: Manifest) -> str | None:
    """What spec.split.method `auto` resolves to on `manifest` (None for any other method)."""
    from kubeforge_trainers.split import recorded_splits, records_split

    if spec.spec.split.method != "auto":
        return None
    return "dataset" if records_split(recorded_splits((im.file_name, im.tags) for im in manifest.images)) \
        else "random"


def _train(spec: TrainRun, store: Store, sink: StoreSink, manifest: Manifest, digest: str, resume: bool,
           started: str, t0: float, dist_env: Any) -> dict[str, Any]:
    from kubeforge_trainers import distributed
    from kubeforge_trainers.data import resolve_classes
    from kubeforge_trainers.export_formats import ExportRecord
    from kubeforge_trainers.progress import ProgressReporter
    from kubeforge_trainers.sdk import TrainContext, get_trainer
    from kubeforge_trainers.split import choose_split

    job = spec.spec
    if not catalog.trains_on(job.task, manifest.task):
        raise ValueError(f"spec.task is {job.task} but dataset version {spec.dataset.dataset}@"
                         f"{spec.dataset.digest[:12]} holds a {manifest.task} dataset")
    trainer = get_trainer(job.model.framework, job.model.name, job.task, job.model.encoder,
                          job.model.entrypoint)
    classes = resolve_classes(manifest, job.classes)
    # The API's defaults are the one source of truth: run specs arrive with every field filled in,
    # so a trainer's own defaults (default_hyperparameters) are advice for users, not a fallback.
    hp = job.hyperparameters
    # What the run trains with: spec.hyperparameters, or a custom trainer's defaults under spec.model.parameters.
    parameters = trainer.run_parameters(job.model.name, hp, job.model.parameters)
    epochs = parameters.get("epochs")
    epochs = epochs if isinstance(epochs, int) and epochs > 0 else hp.epochs
    # spec.split.method (auto: the version's recorded split when it has one, else random).
    split, split_line = choose_split(job.split.method, [(img.file_name, img.tags) for img in manifest.images],
                                     job.split.train_percent, job.split.seed)

    main = dist_env.is_main
    # Only rank 0 publishes; the others report to nobody and keep their console quiet.
    progress = ProgressReporter(sink if main else None, epochs)
    progress.console.quiet = not main
    progress.phase("Preparing")
    progress.console.print(split_line, soft_wrap=True, markup=False, highlight=False)  # one line: greppable
    if main:
        store.put_json(sink.key(layout.RUN_SPEC), {
            "runSpec": spec.model_dump(mode="json", by_alias=True), "runSpecDigest": digest,
            "classes": [c.name for c in classes], "categoryIds": [c.category_id for c in classes],
            "datasetDigest": spec.dataset.digest, "hyperparameters": parameters, "trainer": trainer.name,
            "versions": versions(), "worldSize": dist_env.world_size,
        })
        sink.put_bytes(layout.HYPERPARAMETERS, yaml.safe_dump(parameters, sort_keys=False).encode())
        sink.put_bytes(layout.TRAIN_VAL_SPLIT, json.dumps(split.to_json(), indent=2).encode())
    images = cache_dir() / "images"
    names = set(split.train) | set(split.val)
    # One download per node (ranks on a node share its cache); the others then find every blob there.
    if dist_env.local_rank == 0:
        download_images(store, manifest, names, images, progress)
    distributed.barrier()
    if dist_env.local_rank != 0:
        download_images(store, manifest, names, images, progress)

    with tempfile.TemporaryDirectory(prefix="kubeforge-train-") as tmp:
        out = Path(tmp)
        resume_from = init_from = None
        if resume and store.exists(sink.key(layout.CHECKPOINT_LAST)):
            for rel in (layout.CHECKPOINT_LAST, layout.CHECKPOINT_BEST):
                if store.exists(sink.key(rel)):
                    store.get_file(sink.key(rel), out / rel)
            resume_from = out / layout.CHECKPOINT_LAST
        init_key = spec.init_checkpoint
        if job.model.checkpoint:
            from kubeforge.steps.checkpoints import store_key

            init_key = store_key(store, job.model.checkpoint)
        if init_key:
            init_from = out / "init" / "checkpoint.pt"
            store.get_file(init_key, init_from)
        device = _device(spec)
        ctx = TrainContext(
            task=job.task, model_name=job.model.name, manifest=manifest, image_dir=images, split=split,
            classes=classes, hyperparameters=hp, output_dir=out, progress=progress,
            image_size=job.model.image_size, pretrained=job.model.pretrained, encoder=job.model.encoder,
            init_checkpoint=init_from,
            resume_from=resume_from, device=device, export=list(job.export),
            run_args=spec.model_dump(mode="json", by_alias=True), parameters=parameters,
            augmentations=job.augmentations, cpu=job.resources.cpu, freeze_encoder=job.model.freeze_encoder,
        )
        t_train = time.perf_counter()
        try:
            result = trainer.train(ctx)
        except BaseException:
            progress.phase("Failed")
            raise
        train_seconds = time.perf_counter() - t_train
        if not main:
            # Wait for rank 0 to publish everything, then report its result (the step's exit
            # must not come before rank 0's, and every rank returns the same status).
            return distributed.broadcast({})
        artifacts = {rel: sink.key(rel) for rel in (layout.RUN_SPEC, layout.HYPERPARAMETERS, layout.TRAIN_VAL_SPLIT,
                                                    layout.PROGRESS, layout.METRICS_LOG)}
        for rel, path in sorted(result.files.items()):
            if not store.exists(sink.key(rel)) or not rel.startswith("checkpoints/"):
                sink.put_file(rel, path)
            artifacts[rel] = sink.key(rel)
        if _write_tensorboard(progress.history, out / "logs"):
            for key in store.put_tree(sink.key("logs"), out / "logs"):
                artifacts[key[len(sink.prefix) + 1:]] = key

    progress.phase("Succeeded")
    best = {"name": result.best_metric.name, "value": result.best_metric.value, "epoch": result.best_metric.epoch}
    status: dict[str, Any] = {
        "datasetDigest": spec.dataset.digest,
        "experimentUri": store.url(sink.prefix),
        "bestMetric": best,
        "metrics": {k: float(v) for k, v in result.metrics.items()},
        "progress": {"epoch": progress.epoch, "epochs": progress.epochs, "metrics": progress.metrics},
    }
    if result.onnx is not None:
        status["onnxUri"] = store.url(sink.key(layout.ONNX_EXPORT))
    if result.parity is not None:
        status["onnxParityMaxAbsDiff"] = result.parity["maxAbsDiff"]
    exports = ([ExportRecord("onnx", {layout.ONNX_EXPORT: result.onnx}, result.parity)] if result.onnx else []
               ) + list(result.exports)
    if exports:
        status["exports"] = [r.to_status(lambda rel: store.url(sink.key(rel))) for r in exports]
    TrainingJobStatus.model_validate(status)  # the result must be a valid partial status
    store.put_json(sink.key(layout.EXPERIMENT_INFO), {
        "status": "Succeeded", "startTime": started, "completionTime": now_rfc3339(),
        "durationSeconds": round(time.perf_counter() - t0, 3), "trainSeconds": round(train_seconds, 3),
        "secondsPerEpoch": result.seconds_per_epoch, "epochsRun": result.epochs_run, "resumed": resume_from is not None,
        "bestMetric": best, "metrics": status["metrics"], "onnxParity": result.parity,
        "exportParity": {r.format: r.parity for r in exports if r.parity is not None},
        "datasetDigest": spec.dataset.digest, "runSpecDigest": digest, "classes": [c.name for c in classes],
        "artifacts": dict(sorted(artifacts.items())), "result": status,
        "worldSize": result.world_size, "samplesPerRank": result.samples_per_rank, "training": result.training,
    })
    return distributed.broadcast(status)

"""An export served by the real tritonserver, the way an InferenceService serves it, for serving tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kubeforge.api.inference_service import RuntimeSpec
from kubeforge.models.meta import ModelMeta
from kubeforge.serving import triton_repo
from kubeforge.serving.triton_server import TritonProcess, start_triton, stop_triton


def build_repo(root: Path, onnx: Path, meta: ModelMeta, name: str, runtime: RuntimeSpec) -> Path:
    """The model repository an InferenceService builds, written under `root`; returns the local variant."""
    triton_repo.write_repository(root, triton_repo.repository_files(onnx.read_bytes(), meta, name, runtime))
    return root / triton_repo.LOCAL_VARIANT


@contextmanager
def served(work: Path, onnx: Path, meta: ModelMeta, name: str, runtime: RuntimeSpec,
           backend_dir: Path) -> Iterator[TritonProcess]:
    """tritonserver serving `onnx` as model `name` (log in `work/triton.log`), stopped on exit."""
    repo = build_repo(work / "serving", onnx, meta, name, runtime)
    proc = start_triton(str(repo), name, work / "triton.log", backend_dir=backend_dir)
    try:
        yield proc
    finally:
        stop_triton(proc.pid)


@contextmanager
def registered_service(state: Path, onnx: Path, meta: ModelMeta, name: str, backend_dir: Path,
                       training_job: str = "shapes-detector", run: str = "r1") -> Iterator[TritonProcess]:
    """InferenceService `name` serving in the local state directory `state`, as `kubeforge run` leaves it:
    TrainingJob `training_job`'s run `run` (the export and model_meta.json) in the store `state/store`, its
    repository written there by the serve step, served by the real tritonserver, and the service's status
    (Ready, URLs, the experiment and TrainingJob run it serves) in the state."""
    from kubeforge.api import parse_resource
    from kubeforge.api.inference_service import InferenceServiceSpec
    from kubeforge.local.state import Record, StateDir
    from kubeforge.steps import serve
    from kubeforge.steps.spec import ServeRun
    from kubeforge.store import LocalStore, layout

    store = LocalStore(state / "store")
    experiment = layout.run_output_prefix(layout.experiment_prefix("default", "shapes", training_job, "torch"), run)
    store.put_file(f"{experiment}/{layout.ONNX_EXPORT}", onnx)
    store.put_bytes(f"{experiment}/{layout.MODEL_META}", meta.model_dump_json().encode())
    prefix = layout.serving_prefix("default", name)
    spec = InferenceServiceSpec.model_validate({"model": {"trainingJob": training_job}})
    serve.run(ServeRun(store=store.uri, namespace="default", name=name, experiment_prefix=experiment, spec=spec,
                       output_prefix=prefix, model_name=name))
    repo = store.root / triton_repo.repository_prefix(prefix, triton_repo.LOCAL_VARIANT)
    proc = start_triton(str(repo), name, state / f"triton-{name}.log", backend_dir=backend_dir)
    try:
        resource = parse_resource({
            "apiVersion": "kubeforge.io/v1alpha1", "kind": "InferenceService",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec.model_dump(by_alias=True),
            "status": {"phase": "Succeeded", "ready": True, "url": proc.http_url, "grpcUrl": proc.grpc_url,
                       "modelName": name, "experimentPrefix": experiment, "trainingJob": training_job,
                       "trainingRun": run},
        })
        StateDir(state).save(Record(resource, store=store.uri))
        yield proc
    finally:
        stop_triton(proc.pid)

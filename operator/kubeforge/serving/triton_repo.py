"""Build Triton model repositories from an ONNX export and its `ModelMeta` (pure functions).

Layout under a serving prefix (`serving/<namespace>_<service>/` in the store):

    model_meta.json                      the export's meta, for clients (outside both repositories)
    python/<model>/config.pbtxt          local variant: `backend: "python"`, KIND_CPU
    python/<model>/1/model.onnx
    python/<model>/1/model.py            ONNX Runtime inside Triton's Python backend
    onnxruntime/<model>/config.pbtxt     cluster variant: NGC Triton's `backend: "onnxruntime"`
    onnxruntime/<model>/1/model.onnx
    canary/python/..., canary/onnxruntime/...   spec.canary's model, the same layout (a second root)

With spec.model.versions each served run's export is a version `<model>/<n>/` of the one model, and
config.pbtxt's `version_policy` says which Triton loads (`latest {num_versions}` or `specific {versions}`).

Each of `python/` and `onnxruntime/` is a complete `--model-repository` root. Two roots
because the PyPI tritonserver ships only the Python backend, and an NGC image should run
ONNX Runtime natively (GPU, no Python in the request path).

Batching:
- classification and semantic segmentation with a dynamic batch dimension and
  `runtime.maxBatchSize > 0`: Triton batching on (semantic: `images` [3,H,W] -> `logits`
  [C,H,W], `mask` [H,W] per request); dims leave out the batch dimension, `dynamic_batching` when enabled, and
  the Python model concatenates a dynamic batch into one ONNX Runtime call.
- object-detection and instance-segmentation (one image per ORT call, N detections varying
  per image) and any fixed-batch export: `max_batch_size: 0`, dims are the export's full
  shapes (`images` [1,3,H,W] -> `boxes` [-1,4], `scores` [-1], `labels` [-1], and for
  instance segmentation `masks` [-1,H,W] TYPE_UINT8), so Triton returns exactly what ONNX
  Runtime returns. Throughput comes from `instance_group.count` instead.
  Why not batch=1 per request with batching on: every output would gain a leading 1 and
  differ from the export's contract, and a batch of variable-N outputs cannot be stacked.

The full meta is also embedded in config.pbtxt as the parameter `kubeforge.model_meta`,
so a client given only a URL and a model name can decode results (`client.fetch_meta`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from kubeforge.api.inference_service import RuntimeSpec
from kubeforge.models.meta import ModelMeta, TensorSpec
from kubeforge.serving import pbtxt

Variant = Literal["python", "onnxruntime"]
VARIANTS: tuple[Variant, ...] = ("python", "onnxruntime")
CANARY_DIR = "canary"  # spec.canary's repositories, under the serving prefix
LOCAL_VARIANT: Variant = "python"
CLUSTER_VARIANT: Variant = "onnxruntime"

MODEL_VERSION = "1"
MODEL_FILE = "model.onnx"
PYTHON_MODEL_FILE = "model.py"
CONFIG_FILE = "config.pbtxt"
META_FILE = "model_meta.json"
META_PARAMETER = "kubeforge.model_meta"
# The F1-optimal confidence threshold the model's Benchmark found (kubeforge.predict.threshold), when one did.
THRESHOLD_PARAMETER = "kubeforge.threshold"

# Tasks whose outputs keep one row per input image, so requests can be stacked into one batch.
BATCHED_TASKS = ("classification", "semantic-segmentation")
_TRITON_DTYPES = {"float32": "TYPE_FP32", "int64": "TYPE_INT64", "int32": "TYPE_INT32", "uint8": "TYPE_UINT8"}


@dataclass(frozen=True)
class TensorConfig:
    name: str
    data_type: str  # Triton's enum name, e.g. TYPE_FP32
    dims: tuple[int, ...]


@dataclass(frozen=True)
class ModelConfig:
    """The part of Triton's ModelConfig we generate."""

    name: str
    backend: Variant
    max_batch_size: int
    inputs: tuple[TensorConfig, ...]
    outputs: tuple[TensorConfig, ...]
    instance_count: int = 1
    # KIND_CPU locally; KIND_AUTO in a cluster lets the Deployment's GPU request decide.
    instance_kind: Literal["KIND_CPU", "KIND_GPU", "KIND_AUTO"] = "KIND_CPU"
    dynamic_batching: bool = False
    max_queue_delay_microseconds: int = 0
    parameters: dict[str, str] = field(default_factory=dict)
    # model_config.proto's ModelVersionPolicy: {"latest": {"num_versions": N}} or {"specific": {"versions": [..]}};
    # None is Triton's default (latest 1).
    version_policy: dict[str, Any] | None = None


def _tensor(spec: TensorSpec, batched: bool, where: str) -> TensorConfig:
    try:
        data_type = _TRITON_DTYPES[spec.dtype]
    except KeyError:
        raise ValueError(f"{where}: tensor {spec.name!r} has dtype {spec.dtype!r}; "
                         f"expected one of {sorted(_TRITON_DTYPES)}") from None
    dims = tuple(spec.shape)
    if batched:
        if not dims or dims[0] != -1:
            raise ValueError(f"{where}: tensor {spec.name!r} shape {list(dims)} has no variable batch "
                             "dimension (-1 first), but batching is on")
        dims = dims[1:]
    return TensorConfig(spec.name, data_type, dims)


def supports_batching(meta: ModelMeta) -> bool:
    """Whether Triton may batch requests for this export (see the module docstring)."""
    return meta.task in BATCHED_TASKS and meta.input.dynamic_batch and meta.input.shape[:1] == [-1]


def build_config(meta: ModelMeta, model_name: str, runtime: RuntimeSpec, variant: Variant,
                 threshold: float | None = None) -> ModelConfig:
    """Decide the Triton config for one variant (pure; see the module docstring for the rules)."""
    parameters = {META_PARAMETER: meta.model_dump_json()}
    if threshold is not None:
        parameters[THRESHOLD_PARAMETER] = repr(float(threshold))
    batched = runtime.max_batch_size > 0 and supports_batching(meta)
    where = f"model_meta.json of model {model_name!r}"
    return ModelConfig(
        name=model_name,
        backend=variant,
        max_batch_size=runtime.max_batch_size if batched else 0,
        inputs=(_tensor(meta.input, batched, where),),
        outputs=tuple(_tensor(out, batched, where) for out in meta.outputs),
        instance_count=runtime.instances,
        instance_kind="KIND_CPU" if variant == "python" else "KIND_AUTO",
        dynamic_batching=batched and runtime.dynamic_batching,
        max_queue_delay_microseconds=runtime.max_queue_delay_microseconds,
        parameters=parameters,
    )


def config_message(config: ModelConfig) -> dict[str, Any]:
    """ModelConfig -> the message dict `pbtxt.render` writes (field names as in model_config.proto)."""

    def tensor(t: TensorConfig) -> dict[str, Any]:
        return {"name": t.name, "data_type": pbtxt.Enum(t.data_type), "dims": list(t.dims)}

    message: dict[str, Any] = {
        "name": config.name,
        "backend": config.backend,
        "max_batch_size": config.max_batch_size,
        "input": [tensor(t) for t in config.inputs],
        "output": [tensor(t) for t in config.outputs],
        "instance_group": [{"count": config.instance_count, "kind": pbtxt.Enum(config.instance_kind)}],
    }
    if config.version_policy:
        message["version_policy"] = config.version_policy
    if config.dynamic_batching:
        message["dynamic_batching"] = {"max_queue_delay_microseconds": config.max_queue_delay_microseconds}
    if config.parameters:
        # model_config.proto's `map<string, ModelParameter> parameters` in text form.
        message["parameters"] = [
            {"key": key, "value": {"string_value": value}} for key, value in sorted(config.parameters.items())
        ]
    return message


def render_config(config: ModelConfig) -> str:
    """The config.pbtxt text for one model."""
    return pbtxt.render(config_message(config))


def python_model_source() -> bytes:
    """The shipped Python-backend `model.py` (ONNX Runtime inside Triton)."""
    return resources.files("kubeforge.serving").joinpath("templates", "onnx_model.py").read_bytes()


def repository_files(
    onnx: bytes, meta: ModelMeta, model_name: str, runtime: RuntimeSpec, threshold: float | None = None
) -> dict[str, bytes]:
    """Every file of both variants, keyed by path relative to the serving prefix.

    Ordered for writing: within a model, config.pbtxt comes after the files it loads, so a
    Triton polling the repository never sees a config without its model.
    """
    files: dict[str, bytes] = {META_FILE: meta.model_dump_json(indent=2).encode()}
    for variant in VARIANTS:
        model_dir = f"{variant}/{model_name}"
        files[f"{model_dir}/{MODEL_VERSION}/{MODEL_FILE}"] = onnx
        if variant == "python":
            files[f"{model_dir}/{MODEL_VERSION}/{PYTHON_MODEL_FILE}"] = python_model_source()
        config = build_config(meta, model_name, runtime, variant, threshold)
        files[f"{model_dir}/{CONFIG_FILE}"] = render_config(config).encode()
    return files


@dataclass(frozen=True)
class ModelVersion:
    """One export served as Triton version `number` of a model (`<model>/<number>/`)."""

    number: int
    onnx: bytes
    meta: ModelMeta


def version_policy(numbers: list[int], latest: int | None) -> dict[str, Any]:
    """Triton's version_policy: the newest `latest` versions, or exactly `numbers` (pinned)."""
    if latest is not None:
        return {"latest": {"num_versions": latest}}
    return {"specific": {"versions": sorted(numbers)}}


def versioned_repository_files(versions: list[ModelVersion], model_name: str, runtime: RuntimeSpec,
                               latest: int | None = None, threshold: float | None = None) -> dict[str, bytes]:
    """Like `repository_files`, with each export in `<model>/<n>/` and a version_policy serving them all.

    One config.pbtxt covers every version, so their inputs and outputs must agree; the embedded meta is
    the highest version's (what a request without a version gets).
    """
    if not versions:
        raise ValueError(f"model {model_name!r}: no versions to serve")
    ordered = sorted(versions, key=lambda v: v.number)
    newest = ordered[-1]
    for v in ordered[:-1]:
        if (v.meta.input, v.meta.outputs, v.meta.task) != (newest.meta.input, newest.meta.outputs, newest.meta.task):
            raise ValueError(f"model {model_name!r}: version {v.number}'s inputs/outputs/task differ from version "
                             f"{newest.number}'s; Triton versions of one model share one config (serve the other "
                             "export under its own InferenceService)")
    policy = version_policy([v.number for v in ordered], latest)
    files: dict[str, bytes] = {META_FILE: newest.meta.model_dump_json(indent=2).encode()}
    for variant in VARIANTS:
        model_dir = f"{variant}/{model_name}"
        for v in ordered:
            files[f"{model_dir}/{v.number}/{MODEL_FILE}"] = v.onnx
            if variant == "python":
                files[f"{model_dir}/{v.number}/{PYTHON_MODEL_FILE}"] = python_model_source()
        config = build_config(newest.meta, model_name, runtime, variant, threshold)
        files[f"{model_dir}/{CONFIG_FILE}"] = render_config(replace(config, version_policy=policy)).encode()
    return files


def repository_prefix(serving_prefix: str, variant: Variant) -> str:
    """The `--model-repository` root of one variant under a serving prefix."""
    return f"{serving_prefix.rstrip('/')}/{variant}"


def write_repository(root: Path, files: dict[str, bytes]) -> Path:
    """Write `repository_files(...)` under a local directory; returns `root`."""
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def meta_from_parameters(parameters: dict[str, Any]) -> ModelMeta:
    """Read the embedded meta back from a model config's `parameters` (as Triton's JSON API returns them)."""
    try:
        raw = parameters[META_PARAMETER]["string_value"]
    except KeyError:
        raise KeyError(f"model config has no parameter {META_PARAMETER!r}; was the repository built by kubeforge?"
                       ) from None
    return ModelMeta.model_validate(json.loads(raw))


def threshold_from_parameters(parameters: dict[str, Any]) -> float | None:
    """The recorded default threshold from a model config's `parameters`, or None when none was recorded."""
    raw = parameters.get(THRESHOLD_PARAMETER, {}).get("string_value")
    return float(raw) if raw else None

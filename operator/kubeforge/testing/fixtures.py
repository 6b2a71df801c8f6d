"""pytest fixtures shared by the suite. Servers start once per test session."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

# ---------------------------------------------------------------------------------------
# Object store: one SeaweedFS S3 server per session; each test gets its own prefix.
# ---------------------------------------------------------------------------------------

if TYPE_CHECKING:
    from kubeforge.store.s3 import S3Store
    from kubeforge.testing.seaweedfs import SeaweedFS

# One bucket per session: every bucket takes its own volumes in SeaweedFS, so a bucket per
# test would fill the volume slots; a random prefix per test isolates just as well.
S3_TEST_BUCKET = "kubeforge-test"


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """A running SeaweedFS S3 server (endpoint, access_key, secret_key, env())."""
    from kubeforge.testing.seaweedfs import SeaweedFS

    # Test data is throwaway: a short grace before SIGKILL instead of its ~25 s clean shutdown.
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"), stop_grace=3.0)
    with server:
        yield server


@pytest.fixture
def s3_store(seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch) -> S3Store:
    """An S3Store on a fresh prefix; the env is set so `open_store("s3://...")` in code under test works."""
    from kubeforge.store.s3 import S3Store

    for name, value in seaweedfs.env().items():
        monkeypatch.setenv(name, value)
    return S3Store.from_uri(f"s3://{S3_TEST_BUCKET}/t-{uuid.uuid4().hex[:12]}")


# ---------------------------------------------------------------------------------------
# Serving (Triton): tiny ONNX exports that follow models/meta.py, and the backend dir.
# Imports stay inside the functions so loading this plugin stays cheap.
# ---------------------------------------------------------------------------------------

TINY_COLORS = ["red", "green", "blue"]
TINY_SIZE = 32

# Repeated here so this section does not depend on what the top of the file imports.



def make_tiny_classifier(out_dir: Any) -> tuple[Any, Any]:
    """A 3-class 'dominant colour' classifier exported to ONNX: (model.onnx path, ModelMeta).

    logits = 10 * mean RGB + a small random conv branch, so the class is predictable
    (a red image is 'red') while the arithmetic is not trivial for parity checks.
    """
    from pathlib import Path

    import torch

    from kubeforge.models.meta import InputSpec, ModelMeta, TensorSpec

    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            colour = images.mean(dim=(2, 3)) * 10.0
            texture = torch.relu(self.conv(images)).mean(dim=(2, 3)) * 0.1
            return colour + texture

    torch.manual_seed(0)
    path = Path(out_dir) / "classifier.onnx"
    torch.onnx.export(
        Tiny().eval(), (torch.rand(2, 3, TINY_SIZE, TINY_SIZE),), str(path), input_names=["images"],
        output_names=["logits"], dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=17, dynamo=False,
    )
    meta = ModelMeta(
        task="classification", framework="torch", architecture="tiny-colour", classes=TINY_COLORS,
        input=InputSpec(name="images", dtype="float32", shape=[-1, 3, TINY_SIZE, TINY_SIZE],
                        height=TINY_SIZE, width=TINY_SIZE, dynamic_batch=True),
        outputs=[TensorSpec(name="logits", dtype="float32", shape=[-1, len(TINY_COLORS)])], onnx_opset=17,
    )
    return path, meta


def make_tiny_detector(out_dir: Any) -> tuple[Any, Any]:
    """A detector over a 4x4 grid of cells exported to ONNX: (model.onnx path, ModelMeta).

    A cell is detected when its brightest channel's mean exceeds 0.5 (score = that mean,
    label = that channel), so the number of detections varies with the image.
    """
    from pathlib import Path

    import torch

    from kubeforge.models.meta import InputSpec, ModelMeta, TensorSpec

    cell = TINY_SIZE // 4

    class TinyDetector(torch.nn.Module):
        def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            pooled = torch.nn.functional.avg_pool2d(images, cell)[0]  # [3, 4, 4]
            best, label = pooled.max(dim=0)  # [4, 4]
            ys = torch.arange(4, dtype=torch.float32).view(4, 1).expand(4, 4) * cell
            xs = torch.arange(4, dtype=torch.float32).view(1, 4).expand(4, 4) * cell
            grid = torch.stack([xs, ys, xs + cell, ys + cell], dim=-1).reshape(16, 4)
            scores, labels = best.reshape(16), label.reshape(16)
            keep = scores > 0.5
            return grid[keep], scores[keep], labels[keep].to(torch.int64)

    path = Path(out_dir) / "detector.onnx"
    torch.onnx.export(
        TinyDetector().eval(), (torch.rand(1, 3, TINY_SIZE, TINY_SIZE),), str(path), input_names=["images"],
        output_names=["boxes", "scores", "labels"],
        dynamic_axes={"boxes": {0: "n"}, "scores": {0: "n"}, "labels": {0: "n"}}, opset_version=17, dynamo=False,
    )
    meta = ModelMeta(
        task="object-detection", framework="torch", architecture="tiny-grid", classes=TINY_COLORS,
        input=InputSpec(name="images", dtype="float32", shape=[1, 3, TINY_SIZE, TINY_SIZE],
                        height=TINY_SIZE, width=TINY_SIZE, dynamic_batch=False),
        outputs=[TensorSpec(name="boxes", dtype="float32", shape=[-1, 4]),
                 TensorSpec(name="scores", dtype="float32", shape=[-1]),
                 TensorSpec(name="labels", dtype="int64", shape=[-1])], onnx_opset=17,
    )
    return path, meta


@pytest.fixture(scope="session")
def tiny_classifier(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    """(model.onnx path, ModelMeta) of the tiny colour classifier (dynamic batch)."""
    return make_tiny_classifier(tmp_path_factory.mktemp("tiny-classifier"))


@pytest.fixture(scope="session")
def tiny_detector(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any]:
    """(model.onnx path, ModelMeta) of the tiny grid detector (one image per call, variable N)."""
    return make_tiny_detector(tmp_path_factory.mktemp("tiny-detector"))


@pytest.fixture(scope="session")
def triton_backend_dir() -> Any:
    """The writable Triton backend directory (cached across sessions under ~/.cache/kubeforge)."""
    from kubeforge.serving.triton_server import prepare_backend_dir

    return prepare_backend_dir()


# ---------------------------------------------------------------------------------------
# Kubernetes API: the KMock-based emulator (real HTTP) with the generated CRDs applied, and
# real Kopf operators in threads against it. Imports stay inside the functions.
# ---------------------------------------------------------------------------------------



@pytest.fixture(scope="module")
def kube_emulator() -> Iterator[Any]:
    """A `KubeEmulator` for the test module, with the kubeforge.io CRDs applied (kinds discoverable).

    The CRDs come from the API models through the generator of `kubeforge crds generate` (the very
    text it writes to crds/, which a test keeps in step), not from the source tree: the fixture
    works from an installed wheel. Shared by a module: give each test its own namespace
    (`kube_namespace`) so they do not meet.
    """
    import yaml

    from kubeforge.api.crd import generate_all
    from kubeforge.testing.kube_emulator import KubeEmulator

    with KubeEmulator() as emulator:
        for text in generate_all().values():
            emulator.create(yaml.safe_load(text))
        yield emulator


@pytest.fixture
def kube_namespace(kube_emulator: Any) -> str:
    """A Namespace of its own in the emulator (Kopf serves only namespaces that exist)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    kube_emulator.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    return name


@pytest.fixture
def kopf_operator(kube_emulator: Any) -> Iterator[Callable[..., Any]]:
    """`kopf_operator(registry, **KopfThread kwargs)` starts a Kopf thread on the emulator; stopped after."""
    from kubeforge.testing.kopf_thread import KopfThread

    started: list[KopfThread] = []

    def start(registry: Any, **kwargs: Any) -> KopfThread:
        thread = KopfThread(registry, kube_emulator.kubeconfig_path, **kwargs)
        started.append(thread)
        thread.start()
        return thread

    yield start
    for thread in started:
        if thread.is_alive():
            thread.stop()


@pytest.fixture
def kubeforge_operator(kube_emulator: Any, kube_namespace: str, s3_store: Any, seaweedfs: Any,
                       kopf_operator: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., dict[str, Any]]]:
    """`kubeforge_operator(**settings)`: the real operator watching this test's namespace, its store this
    test's S3 prefix; returns what the tests use (emulator, namespace, store, settings, context, thread,
    the store's keys, and `start` to run a fresh operator instance, as after a restart).

    The operator logs in as the Helm chart's ServiceAccount; a test fails if RBAC refused it anything or
    the API server refused an object or status it wrote."""
    from kubeforge.operator import reconcile
    from kubeforge.testing.kube_operator import build_operator, operator_settings

    monkeypatch.setattr(reconcile, "WAIT_DELAY", 0.5)  # re-check a reference that is not ready quickly

    def start(**overrides: Any) -> dict[str, Any]:
        triton = {"triton_image": overrides.pop("triton_image")} if "triton_image" in overrides else {}
        settings = operator_settings(s3_store.uri, seaweedfs.endpoint, **triton).model_copy(update=overrides)
        registry, ctx = build_operator(settings, kube_emulator)

        def restart() -> Any:
            return kopf_operator(build_operator(settings, kube_emulator)[0], namespaces=(kube_namespace,))

        thread = kopf_operator(registry, namespaces=(kube_namespace,))
        return {"emu": kube_emulator, "ns": kube_namespace, "store": s3_store, "settings": settings, "ctx": ctx,
                "thread": thread, "secret": seaweedfs.secret_key, "access": seaweedfs.access_key, "start": restart}

    denied_before, rejected_before = len(kube_emulator.denials()), len(kube_emulator.rejected_writes())
    yield start
    denied = kube_emulator.denials()[denied_before:]
    assert not denied, f"the chart's RBAC refused the operator: {denied}"
    from kubeforge.testing.chart_rbac import chart_accounts

    operator = chart_accounts().operator_user
    invalid = [r for r in kube_emulator.rejected_writes()[rejected_before:] if r[0].name == operator]
    assert not invalid, f"the API server refused what the operator wrote: {invalid}"


@pytest.fixture
def step_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Steps run in this process cache image blobs in one folder for the session (KUBEFORGE_CACHE_DIR),
    not in the user's ~/.cache. Use with `pytest.mark.usefixtures("step_cache")`."""
    from kubeforge.steps.train import ENV_CACHE_DIR

    path = tmp_path_factory.getbasetemp() / "cache"
    monkeypatch.setenv(ENV_CACHE_DIR, str(path))
    return path

"""A semantic segmentation export served by the real tritonserver (Python backend, ONNX Runtime):
batched config, Triton equals ONNX Runtime, and `kubeforge predict --masks` writes the mask at the
image's own size."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from kubeforge.api.inference_service import RuntimeSpec
from kubeforge.models.meta import ModelMeta
from kubeforge.models.preprocess import to_input
from kubeforge.serving import client, triton_repo
from kubeforge.serving.triton_server import TritonProcess
from kubeforge.testing.triton_serving import served
from kubeforge_trainers.export import export_onnx, model_meta
from kubeforge_trainers.models import model_info

pytestmark = pytest.mark.triton

SIZE = 32


class ColourSegmenter(torch.nn.Module):
    """__bg__ / red / blue per pixel by colour (plus a small conv so parity is not trivial)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        r, g, b = images[:, 0], images[:, 1], images[:, 2]
        colour = torch.stack([torch.full_like(r, 0.3), r - g - b, b - r - g], dim=1) * 4
        return colour + 0.01 * self.conv(images)


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ModelMeta]:
    torch.manual_seed(0)
    meta = model_meta(model_info("unet", "semantic-segmentation", "smp"), ["__bg__", "red", "blue"], SIZE)
    path = tmp_path_factory.mktemp("seg-export") / "model.onnx"
    export_onnx(ColourSegmenter(), meta, path)
    return path, meta


@pytest.fixture(scope="module")
def segmenter_server(segmenter: tuple[Path, ModelMeta], triton_backend_dir: Path,
                     tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonProcess]:
    onnx, meta = segmenter
    work = tmp_path_factory.mktemp("triton-seg")
    runtime = RuntimeSpec(max_batch_size=4, dynamic_batching=True, max_queue_delay_microseconds=20_000)
    with served(work, onnx, meta, "paint", runtime, triton_backend_dir) as proc:
        yield proc


def painted(width: int = 60, height: int = 40) -> Image.Image:
    """Left half red, a blue block bottom right, grey elsewhere."""
    arr = np.full((height, width, 3), 128, dtype=np.uint8)
    arr[:, : width // 2] = (230, 20, 20)
    arr[height // 2:, 3 * width // 4:] = (20, 20, 230)
    return Image.fromarray(arr)


def test_semantic_config_is_batched(segmenter: tuple[Path, ModelMeta]) -> None:
    _, meta = segmenter
    config = triton_repo.build_config(meta, "paint", RuntimeSpec(max_batch_size=4), "onnxruntime")
    assert config.max_batch_size == 4
    assert [(t.name, t.data_type, t.dims) for t in config.outputs] == [
        ("logits", "TYPE_FP32", (3, SIZE, SIZE)), ("mask", "TYPE_UINT8", (SIZE, SIZE))]
    assert config.inputs[0].dims == (3, SIZE, SIZE)


def test_triton_mask_equals_onnx_runtime_and_predict_scales_it(
        segmenter_server: TritonProcess, segmenter: tuple[Path, ModelMeta]) -> None:
    onnx, meta = segmenter
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    images = [painted(), painted(48, 96), painted(32, 32)]
    preds = client.predict_images(segmenter_server.http_url, "paint", meta, images)
    for img, pred in zip(images, preds, strict=True):
        (want,) = session.run(["mask"], {"images": to_input(img, meta)[None]})
        assert pred.mask is not None and pred.mask.shape == (img.height, img.width)
        expected = np.asarray(Image.fromarray(want[0]).resize((img.width, img.height), Image.NEAREST))
        assert (pred.mask == expected).all()
        assert sum(p.fraction for p in pred.pixels) == pytest.approx(1.0)
    # The painted regions come back as their classes, at the original size.
    first = preds[0]
    assert (first.mask[:, :25] == 1).all() and (first.mask[25:, 50:] == 2).all() and (first.mask[:15, 35:] == 0).all()
    fractions = {p.class_name: p.fraction for p in first.pixels}
    assert fractions["red"] == pytest.approx(0.5, abs=0.05) and fractions["blue"] == pytest.approx(0.125, abs=0.05)


def test_predict_cli_writes_masks_and_prints_fractions(segmenter_server: TritonProcess, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from kubeforge.cli.main import app

    path = tmp_path / "scene.png"
    painted().save(path)
    out = tmp_path / "masks"
    runner = CliRunner()
    table = runner.invoke(app, ["predict", "paint", str(path), "--url", segmenter_server.http_url,
                                "--masks", str(out)])
    assert table.exit_code == 0, table.output
    row = next(line for line in table.output.splitlines() if "scene.png" in line)
    assert "red" in row and "%" in row
    written = Image.open(out / "scene.png")
    assert written.mode == "L" and written.size == (60, 40)
    mask = np.asarray(written)
    assert set(np.unique(mask)) == {0, 1, 2} and (mask[:, :25] == 1).all()

    as_json = runner.invoke(app, ["predict", "paint", str(path), "--url", segmenter_server.http_url, "--json"])
    assert as_json.exit_code == 0, as_json.output
    [pred] = json.loads(as_json.stdout)
    assert pred["task"] == "semantic-segmentation" and "mask" not in pred
    assert {p["class_name"] for p in pred["pixels"]} == {"__bg__", "red", "blue"}

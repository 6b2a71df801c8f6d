"""A Mask R-CNN export (4 outputs, one image per call) on the real tritonserver (nvidia-pytriton's,
Python backend running ONNX Runtime), decoded by the client and `kubeforge predict --masks-dir`.

The model is untrained (64 px, from scratch): its outputs are arbitrary but many, which is what
serving must carry unchanged (boxes, scores, labels and uint8 masks of a varying count).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
import tritonclient.http as httpclient
from PIL import Image

from kubeforge.api.inference_service import RuntimeSpec
from kubeforge.models.meta import ModelMeta
from kubeforge.models.preprocess import scale_boxes_to_image, scale_masks_to_image, to_input
from kubeforge.serving import client, triton_repo
from kubeforge.serving.triton_server import TritonProcess
from kubeforge.testing.triton_serving import served

pytestmark = pytest.mark.triton

SIZE = 64
NAMES = ["boxes", "scores", "labels", "masks"]


@pytest.fixture(scope="module")
def mask_rcnn(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ModelMeta]:
    from kubeforge_trainers.export import export_onnx, model_meta
    from kubeforge_trainers.models import model_info

    torch.manual_seed(0)
    info = model_info("maskrcnn_resnet50_fpn_v2", "instance-segmentation")
    meta = model_meta(info, ["circle", "square", "triangle"], SIZE)
    path = tmp_path_factory.mktemp("maskrcnn") / "model.onnx"
    export_onnx(info.build(3, SIZE, False, None), meta, path)
    return path, meta


@pytest.fixture(scope="module")
def server(mask_rcnn: tuple[Path, ModelMeta], triton_backend_dir: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonProcess]:
    onnx, meta = mask_rcnn
    work = tmp_path_factory.mktemp("triton-masks")
    with served(work, onnx, meta, "masks", RuntimeSpec(max_batch_size=8), triton_backend_dir) as proc:
        yield proc


def test_config_takes_one_image_and_returns_uint8_masks(mask_rcnn: tuple[Path, ModelMeta]) -> None:
    config = triton_repo.build_config(mask_rcnn[1], "masks", RuntimeSpec(max_batch_size=8), "onnxruntime")
    assert config.max_batch_size == 0 and not config.dynamic_batching
    assert config.inputs[0].dims == (1, 3, SIZE, SIZE)
    assert [(o.name, o.data_type, o.dims) for o in config.outputs] == [
        ("boxes", "TYPE_FP32", (-1, 4)), ("scores", "TYPE_FP32", (-1,)), ("labels", "TYPE_INT64", (-1,)),
        ("masks", "TYPE_UINT8", (-1, SIZE, SIZE))]


def test_served_outputs_equal_onnx_runtime(server: TritonProcess, mask_rcnn: tuple[Path, ModelMeta]) -> None:
    session = ort.InferenceSession(str(mask_rcnn[0]), providers=["CPUExecutionProvider"])
    conn = httpclient.InferenceServerClient(server.http_url.removeprefix("http://"))
    x = np.random.default_rng(5).random((1, 3, SIZE, SIZE), dtype=np.float32)
    want = dict(zip(NAMES, session.run(NAMES, {"images": x}), strict=True))
    inp = httpclient.InferInput("images", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    result = conn.infer("masks", [inp])
    assert len(want["scores"]) > 0
    for name in NAMES:
        got = result.as_numpy(name)
        assert got.shape == want[name].shape and got.dtype == want[name].dtype, name
        assert np.abs(got.astype(np.float64) - want[name]).max(initial=0) <= 1e-5, name


def image() -> Image.Image:
    rng = np.random.default_rng(7)
    return Image.fromarray(rng.integers(0, 256, size=(80, 96, 3), dtype=np.uint8))  # 96 wide, 80 tall


def test_client_decodes_masks_at_the_image_size(server: TritonProcess, mask_rcnn: tuple[Path, ModelMeta]) -> None:
    onnx, meta = mask_rcnn
    img = image()
    [pred] = client.predict_images(server.http_url, "masks", meta, [img], threshold=0.05)
    session = ort.InferenceSession(str(onnx), providers=["CPUExecutionProvider"])
    boxes, scores, labels, masks = session.run(NAMES, {"images": to_input(img, meta)[None]})
    kept = np.flatnonzero(scores >= 0.05)
    order = kept[np.argsort(-scores[kept], kind="stable")]
    assert len(pred.detections) == len(order) > 0
    expected = scale_masks_to_image(masks[order], img.width, img.height)
    for det, want, k in zip(pred.detections, expected, order, strict=True):
        assert det.mask is not None and det.mask.shape == (80, 96)
        assert np.array_equal(det.mask, want) and det.mask_pixels == int(want.sum())
        assert det.class_name == meta.classes[labels[k]] and det.score == pytest.approx(float(scores[k]))
        assert det.box == pytest.approx(scale_boxes_to_image(boxes[k][None], meta, img.width, img.height)[0].tolist())
    assert "mask" not in pred.to_dict()["detections"][0]


def test_predict_cli_writes_mask_pngs(server: TritonProcess, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from kubeforge.cli.main import app

    path = tmp_path / "scene.png"
    image().save(path)
    out = tmp_path / "masks"
    result = CliRunner().invoke(app, ["predict", "masks", str(path), "--url", server.http_url, "--json",
                                      "--threshold", "0.05", "--masks-dir", str(out)])
    assert result.exit_code == 0, result.output
    [pred] = json.loads(result.stdout)  # --json: the JSON on stdout, the mask paths on stderr
    files = sorted(out.glob("scene_*.png"))
    assert pred["task"] == "instance-segmentation" and len(files) == len(pred["detections"]) > 0
    first = pred["detections"][0]
    png = np.asarray(Image.open(first["mask_file"]))
    assert png.shape == (80, 96) and set(np.unique(png)) <= {0, 255}
    assert int((png > 0).sum()) == first["mask_pixels"]

    table = CliRunner().invoke(app, ["predict", "masks", str(path), "--url", server.http_url, "--threshold", "0.05"])
    assert table.exit_code == 0 and "mask px" in table.output, table.output


def test_masks_dir_is_refused_for_a_detector(tiny_detector: tuple[Path, ModelMeta], tmp_path: Path,
                                             server: TritonProcess) -> None:
    from typer.testing import CliRunner

    from kubeforge.cli.main import app

    path = tmp_path / "x.png"
    image().save(path)
    meta_path = tmp_path / "meta.json"
    meta_path.write_text(tiny_detector[1].model_dump_json())
    # The detector's meta against the served Mask R-CNN is enough: the option is refused before decoding matters.
    result = CliRunner().invoke(app, ["predict", "masks", str(path), "--url", server.http_url, "--meta",
                                      str(meta_path), "--masks-dir", str(tmp_path / "m")])
    assert result.exit_code == 1 and "--masks-dir" in result.output

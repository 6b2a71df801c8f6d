"""`kubeforge predict` on folders and S3 prefixes against the real tritonserver: every output format, batching,
unreadable files, and COCO results scored by pycocotools against a ground truth built from the same scenes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from kubeforge.api.inference_service import RuntimeSpec
from kubeforge.cli.main import app
from kubeforge.models.meta import ModelMeta
from kubeforge.serving.triton_server import TritonProcess
from kubeforge.testing.triton_serving import served

pytestmark = pytest.mark.triton
COLOURS = {"red": (220, 20, 20), "green": (20, 220, 20), "blue": (20, 20, 220)}
W, H = 64, 48  # 2x wide, 1.5x tall of the tiny models' 32x32 input: a detector cell is 16x12 here


@pytest.fixture(scope="module")
def classifier_server(tiny_classifier: tuple[Path, ModelMeta], triton_backend_dir: Path,
                      tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonProcess]:
    onnx, meta = tiny_classifier
    with served(tmp_path_factory.mktemp("cls"), onnx, meta, "colours", RuntimeSpec(max_batch_size=8),
                triton_backend_dir) as proc:
        yield proc


@pytest.fixture(scope="module")
def detector_server(tiny_detector: tuple[Path, ModelMeta], triton_backend_dir: Path,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonProcess]:
    onnx, meta = tiny_detector
    with served(tmp_path_factory.mktemp("det"), onnx, meta, "grid", RuntimeSpec(), triton_backend_dir) as proc:
        yield proc


def scene(i: int) -> tuple[Image.Image, list[tuple[str, tuple[int, int, int, int]]]]:
    """Black image with 1-2 coloured grid cells; returns it and its true (class, xyxy) objects."""
    img = Image.new("RGB", (W, H))
    objects = []
    for k, cell in enumerate(sorted({i % 16, (i * 7 + 3) % 16})[: 1 + i % 2]):
        name = list(COLOURS)[(i + k) % 3]
        box = ((cell % 4) * 16, (cell // 4) * 12, (cell % 4) * 16 + 16, (cell // 4) * 12 + 12)
        img.paste(COLOURS[name], box)
        objects.append((name, box))
    return img, objects


def folder(root: Path, count: int) -> dict[str, list[tuple[str, tuple[int, int, int, int]]]]:
    truth = {}
    for i in range(count):
        img, objects = scene(i)
        path = root / ("nested/deeper" if i % 3 == 0 else "") / f"img{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path)
        truth[str(path)] = objects
    return truth


def run(*args: str) -> object:
    return CliRunner().invoke(app, ["predict", *args])


def test_folder_to_jsonl_is_recursive_sorted_and_correct(detector_server: TritonProcess, tmp_path: Path) -> None:
    truth = folder(tmp_path / "in", 12)
    (tmp_path / "in" / "notes.txt").write_text("not an image: left out of a folder")
    out = tmp_path / "preds.jsonl"
    result = run("grid", str(tmp_path / "in"), "--url", detector_server.grpc_url, "-f", "jsonl", "-o", str(out))
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [p["image"] for p in lines] == sorted(truth)
    for pred in lines:
        found = sorted((d["class_name"], tuple(d["box"])) for d in pred["detections"])
        assert found == sorted((n, tuple(map(float, b))) for n, b in truth[pred["image"]])
    assert "12 images in" in result.stderr and "images/s" in result.stderr
    assert "threshold 0.5 (default: no Benchmark recorded one" in result.stderr


def test_coco_results_load_in_pycocotools_and_score_perfectly(detector_server: TritonProcess,
                                                              tmp_path: Path) -> None:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    truth = folder(tmp_path / "in", 10)
    out = tmp_path / "results.json"
    result = run("grid", str(tmp_path / "in"), "--url", detector_server.http_url, "-f", "coco", "-o", str(out))
    assert result.exit_code == 0, result.output
    mapping = json.loads((tmp_path / "results.images.json").read_text())
    assert [img["file_name"] for img in mapping["images"]] == sorted(truth)
    # The ground truth, built from the scenes with the mapping's ids.
    cat = {c["name"]: c["id"] for c in mapping["categories"]}
    anns = [{"id": n + 1, "image_id": img["id"], "category_id": cat[name], "iscrowd": 0,
             "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)}
            for img in mapping["images"] for n, (name, (x1, y1, x2, y2)) in
            enumerate(truth[img["file_name"]], start=img["id"] * 10)]
    gt_path = tmp_path / "gt.json"
    gt_path.write_text(json.dumps({**mapping, "annotations": anns}))
    gt = COCO(str(gt_path))
    evaluation = COCOeval(gt, gt.loadRes(str(out)), "bbox")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)  # AP@[.5:.95]

    # --coco-gt: ids from the user's ground truth instead (and no mapping file needed).
    again = tmp_path / "again.json"
    result = run("grid", str(tmp_path / "in"), "--url", detector_server.grpc_url, "-f", "coco", "-o", str(again),
                 "--coco-gt", str(gt_path))
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "again.images.json").exists()
    assert len(gt.loadRes(str(again)).getAnnIds()) == len(anns)


def test_annotated_images_are_drawn(detector_server: TritonProcess, tmp_path: Path) -> None:
    truth = folder(tmp_path / "in", 4)
    out = tmp_path / "drawn"
    result = run("grid", str(tmp_path / "in"), "--url", detector_server.grpc_url, "-f", "annotated", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(Path(p).name for p in truth)
    for path in truth:
        drawn = np.asarray(Image.open(out / Path(path).name))
        assert drawn.shape == (H, W, 3) and (drawn != np.asarray(Image.open(path))).any()


def test_classifier_batches_requests(classifier_server: TritonProcess, tmp_path: Path) -> None:
    import tritonclient.grpc as grpcclient

    paths = []
    for i in range(20):
        name = list(COLOURS)[i % 3]
        paths.append(tmp_path / f"{i:02d}-{name}.png")
        Image.new("RGB", (W, H), COLOURS[name]).save(paths[-1])
    stats = grpcclient.InferenceServerClient(classifier_server.grpc_url)

    def counts() -> tuple[int, int]:
        s = stats.get_inference_statistics("colours", as_json=True)["model_stats"][0]
        return int(s.get("inference_count", 0)), int(s["inference_stats"]["success"].get("count", 0))

    before = counts()
    result = run("colours", str(tmp_path), "--url", classifier_server.grpc_url, "-f", "jsonl", "--top-k", "1")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [p["classes"][0]["class_name"] for p in lines] == [Path(p).stem.split("-")[1] for p in sorted(map(str,
                                                                                                     paths))]
    images, requests = (a - b for a, b in zip(counts(), before, strict=True))
    assert images == 20 and requests < 20  # several images per request
    refused = run("colours", str(tmp_path), "--url", classifier_server.grpc_url, "-f", "coco", "-o",
                  str(tmp_path / "c.json"))
    assert refused.exit_code == 1 and "classification" in refused.output


def test_unreadable_file_stops_naming_it_or_is_skipped(detector_server: TritonProcess, tmp_path: Path) -> None:
    truth = folder(tmp_path / "in", 6)
    bad = tmp_path / "in" / "img003-broken.png"  # sorts after img003: three good images come first
    bad.write_bytes(b"not a png")
    out = tmp_path / "p.jsonl"
    stopped = run("grid", str(tmp_path / "in"), "--url", detector_server.grpc_url, "-f", "jsonl", "-o", str(out))
    assert stopped.exit_code == 1 and str(bad) in stopped.output and "not a readable image" in stopped.output
    kept = [json.loads(line)["image"] for line in out.read_text().splitlines()]
    assert kept and kept == sorted(truth)[: len(kept)]  # what came before the bad file was written
    skipped = run("grid", str(tmp_path / "in"), "--url", detector_server.grpc_url, "-f", "jsonl", "-o", str(out),
                  "--skip-errors")
    assert skipped.exit_code == 0, skipped.output
    assert "skipped 1 unreadable input" in skipped.stderr and str(bad) in skipped.stderr
    assert [json.loads(line)["image"] for line in out.read_text().splitlines()] == sorted(truth)


def test_s3_prefix(detector_server: TritonProcess, s3_store: object, tmp_path: Path) -> None:
    truth = folder(tmp_path / "in", 5)
    for path in truth:
        s3_store.put_file(f"photos/{Path(path).name}", Path(path))  # type: ignore[attr-defined]
    s3_store.put_bytes("photos/readme.md", b"# not an image")  # type: ignore[attr-defined]
    uri = f"{s3_store.uri}/photos"  # type: ignore[attr-defined]
    result = run("grid", uri, "--url", detector_server.grpc_url, "-f", "jsonl")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [p["image"] for p in lines] == sorted(f"{uri}/{Path(p).name}" for p in truth)
    by_name = {Path(p).name: objs for p, objs in truth.items()}
    for pred in lines:
        assert len(pred["detections"]) == len(by_name[pred["image"].rsplit("/", 1)[1]])
    missing = run("grid", f"{s3_store.uri}/nothing-here", "--url", detector_server.grpc_url)  # type: ignore[attr-defined]
    assert missing.exit_code == 1 and "no images under this prefix" in missing.output


def test_masks_as_rle_round_trip() -> None:
    from pycocotools import mask as mask_util

    from kubeforge.predict.outputs import prediction_json
    from kubeforge.serving.client import ClassPixels, Detection, Prediction

    inst = np.zeros((30, 40), np.uint8)
    inst[5:20, 10:30] = 1
    semantic = np.zeros((30, 40), np.uint8)
    semantic[:, 20:] = 2
    pred = Prediction(image="a.png", width=40, height=30, task="instance-segmentation",
                      detections=[Detection("x", 0, 0.9, [10, 5, 30, 20], mask=inst, mask_pixels=300)])
    [det] = prediction_json(pred, masks_as_rle=True)["detections"]
    rle = {**det["segmentation"], "counts": det["segmentation"]["counts"].encode()}
    assert (mask_util.decode(rle) == inst).all()
    sem = Prediction(image="b.png", width=40, height=30, task="semantic-segmentation", mask=semantic,
                     pixels=[ClassPixels("bg", 0, 0.5), ClassPixels("sky", 2, 0.5)])
    rows = {p["class_name"]: p["segmentation"] for p in prediction_json(sem, masks_as_rle=True)["pixels"]}
    sky = mask_util.decode({**rows["sky"], "counts": rows["sky"]["counts"].encode()})
    assert (sky == (semantic == 2)).all()
    assert all("segmentation" not in px for px in prediction_json(sem)["pixels"])  # only when asked


def cells_video(path: Path, frames: int = 12) -> list[tuple[int, int, int, int]]:
    """A red cell in the second row and, from frame 4 on, a green one in the third (the grid detector sees
    cells only, so objects stay put; the trackers' motion is tested in test_tracking.py); returns red's boxes."""
    from kubeforge.predict.video import AnnotatedVideoWriter
    from kubeforge.serving.client import Prediction

    boxes = []
    with AnnotatedVideoWriter(path, fps=10.0) as writer:
        for f in range(frames):
            img = Image.new("RGB", (W, H))
            box = (16, 12, 32, 24)
            img.paste(COLOURS["red"], box)
            if f >= 4:
                img.paste(COLOURS["green"], (32, 24, 48, 36))
            boxes.append(box)
            writer.write(img, Prediction(image="", width=W, height=H, task="object-detection"))
    return boxes


def test_video_frames_tracked_and_annotated(detector_server: TritonProcess, tmp_path: Path) -> None:
    clip = tmp_path / "clip.mp4"
    boxes = cells_video(clip)
    out = tmp_path / "frames.jsonl"
    result = run("grid", str(clip), "--url", detector_server.grpc_url, "-f", "jsonl", "-o", str(out),
                 "--track", "bytetrack", "--threshold", "0.3")
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [p["frame"] for p in lines] == list(range(len(boxes)))
    assert [round(p["timestamp"], 3) for p in lines] == [round(f / 10, 3) for f in range(len(boxes))]
    tracks: dict[str, set[int]] = {"red": set(), "green": set()}
    for f, (pred, box) in enumerate(zip(lines, boxes, strict=True)):
        reds = [d for d in pred["detections"] if d["class_name"] == "red"]
        assert len(reds) == 1, pred
        assert np.allclose(reds[0]["box"], box, atol=2.0)
        assert len([d for d in pred["detections"] if d["class_name"] == "green"]) == (f >= 4)
        for det in pred["detections"]:
            if det.get("track_id") is not None:
                tracks[det["class_name"]].add(det["track_id"])
    # One identity per object across the video, and two objects, two identities.
    assert len(tracks["red"]) == 1 and len(tracks["green"]) == 1 and tracks["red"] != tracks["green"]

    annotated = tmp_path / "annotated"
    result = run("grid", str(clip), "--url", detector_server.grpc_url, "-f", "annotated", "-o", str(annotated),
                 "--stride", "2")
    assert result.exit_code == 0, result.output
    from kubeforge.predict.video import probe

    info = probe(annotated / "clip.mp4")
    assert info.frames == len(boxes) // 2 and (info.width, info.height) == (W, H)


def test_track_needs_a_video(detector_server: TritonProcess, tmp_path: Path) -> None:
    folder(tmp_path / "in", 2)
    result = run("grid", str(tmp_path / "in"), "--url", detector_server.grpc_url, "--track", "bytetrack")
    assert result.exit_code == 1 and "no PATH is a video file" in result.output

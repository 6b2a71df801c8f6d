"""`kubeforge eval coco`: the 12 numbers of pycocotools, a readable table, and one-line errors (exit 2)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from kubeforge.cli.main import build
from tests.test_cocoeval import make_boxes, make_masks, reference

REPO = Path(__file__).resolve().parents[1]
NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]


def _write(tmp_path: Path, gt: object, res: object) -> tuple[Path, Path]:
    gt_path, dt_path = tmp_path / "GT.json", tmp_path / "DT.json"
    gt_path.write_text(json.dumps(gt))
    dt_path.write_text(json.dumps(res))
    return gt_path, dt_path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kubeforge.cli.main", "eval", "coco", *args],
                          capture_output=True, text=True, timeout=120, cwd=REPO)


def test_json_equals_pycocotools(tmp_path: Path) -> None:
    for iou_type, (gt, res) in (("bbox", make_boxes(11)), ("segm", make_masks(11))):
        gt_path, dt_path = _write(tmp_path, gt, res)
        proc = _run("--gt", str(gt_path), "--dt", str(dt_path), "--iou-type", iou_type, "--json")
        assert proc.returncode == 0, proc.stderr
        got = json.loads(proc.stdout.strip().splitlines()[-1])
        assert list(got) == NAMES
        ref = reference(gt, res, iou_type).stats
        for name, value in zip(NAMES, ref, strict=True):
            assert (got[name] is None) if value == -1 else abs(got[name] - value) <= 1e-9, (iou_type, name)


def test_table(tmp_path: Path) -> None:
    gt, res = make_boxes(12)
    gt_path, dt_path = _write(tmp_path, gt, res)
    result = CliRunner().invoke(build("eval"), ["eval", "coco", "--gt", str(gt_path), "--dt", str(dt_path)])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "maxDets" in line]
    assert len(lines) == 12
    ap = reference(gt, res).stats[0]
    assert lines[0].startswith(" Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ]")
    assert lines[0].endswith(f"= {ap:0.3f}")


def _bad_cases() -> list[tuple[str, str]]:
    """(how the input is broken, expected stderr) - each run through the real CLI."""
    return [
        ("image", "DT.json: results[17]: image_id 99 is not in the ground truth"),
        ("category", "DT.json: results[5]: category_id 77 is not in the ground truth"),
        ("negative", "GT.json: annotations[3].bbox: negative width -4.0"),
        ("negative_h", "DT.json: results[8].bbox: negative height -1.5"),
        ("truncated", "GT.json: not valid JSON (truncated at byte 1234)"),
        ("not_list", "DT.json: expected a JSON list of results"),
        ("not_coco", "GT.json: not a COCO ground truth"),
        ("garbage", "DT.json: not valid JSON"),
        ("entry", "DT.json: results[2]: expected an object"),
        ("missing", "GT.json: annotations[4]: missing bbox"),
    ]


@pytest.mark.parametrize("case", range(10))
def test_bad_input_one_line(tmp_path: Path, case: int) -> None:
    how, expected = _bad_cases()[case]
    gt, res = make_boxes(0, n_images=40)
    gt["images"] = [im for im in gt["images"] if im["id"] != 99]
    gt_text, dt_text = None, None
    if how == "image":
        res[17]["image_id"] = 99
    elif how == "category":
        res[5]["category_id"] = 77
    elif how == "negative":
        gt["annotations"][3]["bbox"][2] = -4.0
    elif how == "negative_h":
        res[8]["bbox"][3] = -1.5
    elif how == "truncated":
        gt_text = json.dumps(gt)[:1234]
    elif how == "not_list":
        dt_text = json.dumps({"annotations": res})
    elif how == "not_coco":
        gt_text = json.dumps([1, 2, 3])
    elif how == "garbage":
        dt_text = "[{'image_id': 1}]"
    elif how == "entry":
        res[2] = [1, 2]  # type: ignore[call-overload]
    elif how == "missing":
        del gt["annotations"][4]["bbox"]
    gt_path, dt_path = _write(tmp_path, gt, res)
    if gt_text is not None:
        gt_path.write_text(gt_text)
    if dt_text is not None:
        dt_path.write_text(dt_text)
    proc = _run("--gt", str(gt_path), "--dt", str(dt_path), "--json")
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    err = proc.stderr.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith(str(tmp_path / expected.split(":")[0])), err
    assert expected.split(": ", 1)[1] in err, err
    assert proc.stdout == ""


def test_bad_iou_type(tmp_path: Path) -> None:
    gt_path, dt_path = _write(tmp_path, *make_boxes(0, n_images=3))
    proc = _run("--gt", str(gt_path), "--dt", str(dt_path), "--iou-type", "keypoints")
    assert proc.returncode == 2 and "bbox or segm" in proc.stderr


def test_numbers_are_floats(tmp_path: Path) -> None:
    gt, res = make_boxes(3, n_images=5)
    gt_path, dt_path = _write(tmp_path, gt, res)
    got = json.loads(_run("--gt", str(gt_path), "--dt", str(dt_path), "--json").stdout.splitlines()[-1])
    assert all(v is None or isinstance(v, float) for v in got.values())
    assert np.isfinite([v for v in got.values() if v is not None]).all()

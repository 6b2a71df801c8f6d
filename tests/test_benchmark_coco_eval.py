"""benchmarks/coco_eval.py at a tiny size: the last line's keys, and kubeforge equal to pycocotools."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_benchmark_tiny(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "coco_eval.py"), "--images", "20,60", "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    result = json.loads(lines[-1])
    for key in ("pycocotools_s", "faster_coco_eval_s", "kubeforge_s", "kubeforge_cli_s"):
        assert isinstance(result[key], float) and result[key] > 0, key
    assert result["max_abs_diff"] <= 1e-9 and result["max_abs_diff_by_tool"]["kubeforge_cli"] <= 1e-9
    assert set(result["bySize"]) == {"20", "60"}
    assert any("kubeforge" in line for line in lines[:-1])  # the table

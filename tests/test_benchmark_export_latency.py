"""benchmarks/export_latency.py runs as documented and prints its JSON line (small size; figures are not
asserted: timing belongs to the benchmark, not the tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "export_latency.py"


def test_export_latency_benchmark_prints_both_runtimes() -> None:
    proc = subprocess.run([sys.executable, str(BENCHMARK), "--runs", "2", "--models", "resnet18"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert [(r["model"], r["batch"]) for r in result["results"]] == [("resnet18", 1), ("resnet18", 8)]
    assert all(r["ort_ms"] > 0 and r["openvino_ms"] > 0 for r in result["results"])
    assert "OpenVINO" in proc.stderr

"""The operator benchmarks run as documented and print their JSON line (small sizes; figures are not
asserted: timing belongs to the benchmarks, not the tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def last_json_line(*args: str) -> dict[str, object]:
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_operator_scale_benchmark_runs_under_the_charts_rbac() -> None:
    result = last_json_line(str(BENCHMARKS / "operator_scale.py"), "--count", "20")
    assert result["created"] == result["with_job"] == result["jobs_in_api"] == 20
    assert result["denied"] == 0 and result["rejected"] == 0


@pytest.mark.slow
def test_operator_e2e_benchmark_goes_ready_and_answers() -> None:
    result = last_json_line(str(BENCHMARKS / "operator_e2e.py"))
    assert result["ready"] is True and result["runner_errors"] == []
    seconds = result["seconds"]
    assert isinstance(seconds, dict) and set(seconds) == {
        "DatasetVersion/shapes-v1", "TrainingJob/shapes-detector", "Benchmark/shapes-detector-benchmark",
        "InferenceService/shapes"}

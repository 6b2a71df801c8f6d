"""The data-versioning benchmark's Kubeforge half at N=200 (no DVC): keys and store growth."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_benchmark_kubeforge_half(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "data_versioning.py"), "--kubeforge-only", "--files", "200",
         "--manifest-images", "2000", "--workdir", str(tmp_path / "w")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("kubeforge_first_s", "kubeforge_incremental_s", "kubeforge_restore_s", "kubeforge_store_bytes_v1",
                "kubeforge_store_bytes_v2", "changed_bytes", "dataset_bytes", "kubeforge_import_1m_s",
                "kubeforge_import_1m_peak_mb"):
        assert isinstance(result[key], int | float) and result[key] >= 0, key
    growth = result["kubeforge_store_bytes_v2"] - result["kubeforge_store_bytes_v1"]
    # The changed and new files once each, plus the new version's manifest and stats (200 files: < 60 KB).
    assert result["changed_bytes"] <= growth <= result["changed_bytes"] + 60_000
    assert result["dataset_bytes"] <= result["kubeforge_store_bytes_v1"] <= result["dataset_bytes"] * 1.1

"""The data-versioning benchmark's Kubeforge half at N=200 (no DVC), S3 included: keys and store growth.

Only that the keys are there and sane: speed is the benchmark's business, never a test's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_benchmark_kubeforge_half(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "data_versioning.py"), "--kubeforge-only", "--files", "200",
         "--small-files", "300", "--manifest-images", "2000", "--workdir", str(tmp_path / "w")],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for key in ("kubeforge_first_s", "kubeforge_incremental_s", "kubeforge_noop_s", "kubeforge_restore_s",
                "kubeforge_store_bytes_v1", "kubeforge_store_bytes_v2", "changed_bytes", "dataset_bytes",
                "kubeforge_import_1m_s", "kubeforge_import_1m_peak_mb", "help_s", "s3_kubeforge_first_s",
                "s3_kubeforge_incremental_s", "s3_plain_parallel_put_s", "s3_kubeforge_checkout_s",
                "s3_kubeforge_store_bytes_v2", "files_100k_kubeforge_s", "files_100k_peak_mb"):
        assert isinstance(result[key], int | float) and result[key] > 0, key
    # --kubeforge-only: no DVC figure is made up.
    assert not [k for k in result if "dvc" in k]
    assert result["small_files"] == 300 and result["manifest_images"] == 2000
    # A process's peak RSS in MB: more than the interpreter, far less than the machine.
    assert 20 < result["files_100k_peak_mb"] < 4096
    growth = result["kubeforge_store_bytes_v2"] - result["kubeforge_store_bytes_v1"]
    # The changed and new files once each, plus the new version's manifest and stats (200 files: < 60 KB).
    assert result["changed_bytes"] <= growth <= result["changed_bytes"] + 60_000
    assert result["dataset_bytes"] <= result["kubeforge_store_bytes_v1"] <= result["dataset_bytes"] * 1.1
    # The same files into S3: the bucket holds what the local store holds (blobs, manifest, stats, cache).
    assert result["dataset_bytes"] <= result["s3_kubeforge_store_bytes_v2"] <= result["kubeforge_store_bytes_v2"] * 1.1

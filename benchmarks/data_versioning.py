"""Kubeforge against DVC on the same data: first version, +1% changed/+1% new, restore, store size.

    .venv/bin/python benchmarks/data_versioning.py            # 10,000 files, both tools, local + S3
    .venv/bin/python benchmarks/data_versioning.py --files 500 --no-s3
    .venv/bin/python benchmarks/data_versioning.py --kubeforge-only --files 200   # what the test runs

Data: N real PNG files of random RGB noise, 53-103 px a side, so 8-32 KB each (noise does not
compress), in 10 class folders: an ImageFolder dataset. Real images are the fair choice:
Kubeforge must read each image's size (it records width and height) where DVC only hashes, and
`--check header` is what it runs (the header is parsed for the size; see importer.py for what
that checks). Both tools run as the CLI a user types, as subprocesses (start-up included), page
cache warm (the data was just written), `sync` before each timed step. DVC comes from its own
venv (.bench/dvc-venv, created on first use with pip). Restoring: `kubeforge datasets checkout
v1 DIR` and `dvc checkout` after `git checkout HEAD~1 -- data.dvc`, both in the folder at v2.
Store sizes: every file under the Kubeforge store (blobs, manifests, stats, import cache)
against every file under .dvc/cache. The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / ".bench"
KF = [str(REPO / ".venv" / "bin" / "kubeforge")]
DVC_VENV = BENCH / "dvc-venv"
CLASSES = 10


def write_png(path: Path, rng: np.random.Generator) -> None:
    side = int(rng.integers(53, 104))
    pixels = rng.integers(0, 256, size=(side, side, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, compress_level=1)


def generate(root: Path, n: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for i in range(n):
        write_png(root / f"class{i % CLASSES}" / f"img{i:06d}.png", rng)


def make_change(patch: Path, n: int, seed: int = 1) -> tuple[list[str], int]:
    """1% of the files rewritten, 1% new ones, into `patch` (copied over each tool's data)."""
    rng = np.random.default_rng(seed)
    k = max(1, n // 100)
    changed = [f"class{i % CLASSES}/img{i:06d}.png" for i in rng.choice(n, size=k, replace=False)]
    added = [f"class{i % CLASSES}/img{i:06d}.png" for i in range(n, n + k)]
    for rel in changed + added:
        write_png(patch / rel, rng)
    return changed + added, sum((patch / r).stat().st_size for r in changed + added)


def apply_change(patch: Path, data: Path) -> None:
    shutil.copytree(patch, data, dirs_exist_ok=True)


def tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def timed(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> tuple[float, str]:
    subprocess.run(["sync"], check=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return elapsed, proc.stdout + proc.stderr


def kubeforge_run(data: Path, patch: Path, store: str, env: dict[str, str], *, restore: bool,
                  size: callable) -> dict[str, float]:  # type: ignore[valid-type]
    """v1, (the patch applied by the caller in between), v2, restore v1 into `data`."""
    imp = [*KF, "datasets", "import", str(data), "--dataset", "bench", "--format", "imagefolder",
           "--store", store, "--check", "header"]
    out: dict[str, float] = {}
    out["first_s"], text = timed(imp, env=env)
    v1 = re.search(r"bench@([0-9a-f]{64})", text).group(1)  # type: ignore[union-attr]
    out["store_bytes_v1"] = size()
    apply_change(patch, data)
    out["incremental_s"], text = timed(imp, env=env)
    out["store_bytes_v2"] = size()
    if restore:
        out["restore_s"], _ = timed([*KF, "datasets", "checkout", f"bench@{v1}", str(data), "--store", store], env=env)
    return out


def dvc_env(s3: object | None) -> dict[str, str]:
    env = {**os.environ, "PATH": f"{DVC_VENV / 'bin'}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    if s3 is not None:
        env.update({"AWS_ACCESS_KEY_ID": s3.access_key, "AWS_SECRET_ACCESS_KEY": s3.secret_key})  # type: ignore[attr-defined]
    return env


def ensure_dvc() -> None:
    """DVC as a user installs it: its own venv, `pip install dvc dvc-s3` (first use only)."""
    if not (DVC_VENV / "bin" / "dvc").exists():
        subprocess.run(["python3", "-m", "venv", str(DVC_VENV)], check=True)
        subprocess.run([str(DVC_VENV / "bin" / "pip"), "install", "-q", "dvc", "dvc-s3"], check=True)


def dvc_run(repo: Path, patch: Path, s3: object | None) -> dict[str, float]:
    env = dvc_env(s3)
    git = ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.com"]

    def sh(*cmd: str) -> None:
        subprocess.run(cmd, cwd=repo, env=env, check=True, capture_output=True)

    sh("git", "init", "-q")
    sh("dvc", "init", "-q")
    if s3 is not None:
        sh("dvc", "remote", "add", "-d", "bench", "s3://bench-dvc/cache")
        sh("dvc", "remote", "modify", "bench", "endpointurl", f"http://{s3.endpoint}")  # type: ignore[attr-defined]
    sh(*git, "add", ".dvc", ".dvcignore")
    sh(*git, "commit", "-q", "-m", "init")
    out: dict[str, float] = {}
    out["first_s"], _ = timed(["dvc", "add", "data"], cwd=repo, env=env)
    out["cache_bytes_v1"] = tree_bytes(repo / ".dvc" / "cache")
    if s3 is not None:
        out["push_first_s"], _ = timed(["dvc", "push"], cwd=repo, env=env)
    sh(*git, "add", "data.dvc", ".gitignore")
    sh(*git, "commit", "-q", "-m", "v1")
    apply_change(patch, repo / "data")
    out["incremental_s"], _ = timed(["dvc", "add", "data"], cwd=repo, env=env)
    out["cache_bytes_v2"] = tree_bytes(repo / ".dvc" / "cache")
    if s3 is not None:
        out["push_incremental_s"], _ = timed(["dvc", "push"], cwd=repo, env=env)
    sh(*git, "add", "data.dvc")
    sh(*git, "commit", "-q", "-m", "v2")
    sh("git", "checkout", "-q", "HEAD~1", "--", "data.dvc")
    out["restore_s"], _ = timed(["dvc", "checkout"], cwd=repo, env=env)
    return out


def manifest_1m(n: int, store: Path) -> dict[str, float]:
    """Build and store an n-image version from synthetic rows, in a fresh process (its own peak RSS)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--_manifest-child", str(n), str(store)],
                          capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"import_s": child["seconds"], "peak_mb": child["peak_mb"], "process_s": wall, "digest": child["digest"]}


def _manifest_child(n: int, store_dir: str) -> None:
    import hashlib
    import resource

    from kubeforge.datasets.columnar import ColumnarManifest
    from kubeforge.datasets.versions import write_version
    from kubeforge.store.local import LocalStore

    start = time.perf_counter()
    rows = ((f"class{i % 100}/img{i:07d}.jpg", hashlib.sha256(i.to_bytes(8, "little")).hexdigest(),
             8192 + i % 24576, 64 + i % 512, 48 + i % 384, f"class{i % 100}") for i in range(n))
    version = ColumnarManifest.from_rows("synthetic", rows)
    digest, _ = write_version(LocalStore(store_dir), version)
    seconds = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": round(seconds, 2), "peak_mb": round(peak_mb, 1), "digest": digest}))


def ratio(a: float, b: float) -> str:
    return f"{b / a:.1f}x" if a > 0 else "-"


def table(title: str, rows: list[tuple[str, float, float, str]]) -> str:
    lines = [title, f"{'step':<34}{'kubeforge':>14}{'dvc':>14}{'dvc / kf':>10}"]
    for name, kf, dvc, unit in rows:
        fmt = (lambda v: f"{v:.2f} s") if unit == "s" else (lambda v: f"{v / 1e6:.2f} MB")
        lines.append(f"{name:<34}{fmt(kf):>14}{fmt(dvc):>14}{ratio(kf, dvc):>10}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--manifest-images", type=int, default=1_000_000)
    ap.add_argument("--kubeforge-only", action="store_true", help="no DVC (and no S3): the test's quick run")
    ap.add_argument("--no-s3", action="store_true")
    ap.add_argument("--workdir", type=Path, default=BENCH / "work")
    args = ap.parse_args()
    work: Path = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    (work / "kf").mkdir(parents=True)
    generate(work / "kf" / "data", args.files)
    changed, changed_bytes = make_change(work / "patch", args.files)
    dataset_bytes = tree_bytes(work / "kf" / "data")
    result: dict[str, object] = {"files": args.files, "changed_files": len(changed), "changed_bytes": changed_bytes,
                                 "dataset_bytes": dataset_bytes}
    if not args.kubeforge_only:
        ensure_dvc()
        shutil.copytree(work / "kf" / "data", work / "dvc" / "data")
    kf_store = work / "kf-store"
    kf = kubeforge_run(work / "kf" / "data", work / "patch", str(kf_store), dict(os.environ), restore=True,
                       size=lambda: tree_bytes(kf_store))
    result.update({f"kubeforge_{k}": round(v, 3) for k, v in kf.items()})
    if not args.kubeforge_only:
        dvc = dvc_run(work / "dvc", work / "patch", None)
        result.update({f"dvc_{k}": round(v, 3) for k, v in dvc.items()})
        print(table(f"Local: {args.files} PNG files, {dataset_bytes / 1e6:.1f} MB; 1% changed + 1% new "
                    f"({changed_bytes / 1e6:.2f} MB)", [
                        ("first version (import | dvc add)", kf["first_s"], dvc["first_s"], "s"),
                        ("second version", kf["incremental_s"], dvc["incremental_s"], "s"),
                        ("restore v1 (checkout)", kf["restore_s"], dvc["restore_s"], "s"),
                        ("store after v1", kf["store_bytes_v1"], dvc["cache_bytes_v1"], "B"),
                        ("store after v2", kf["store_bytes_v2"], dvc["cache_bytes_v2"], "B"),
                        ("store growth v1 -> v2", kf["store_bytes_v2"] - kf["store_bytes_v1"],
                         dvc["cache_bytes_v2"] - dvc["cache_bytes_v1"], "B")]))
        if not args.no_s3:
            result.update(s3_tables(work, args.files))
    m = manifest_1m(args.manifest_images, work / "manifest-store")
    result.update({"kubeforge_import_1m_s": m["import_s"], "kubeforge_import_1m_peak_mb": m["peak_mb"],
                   "manifest_images": args.manifest_images})
    print(f"{args.manifest_images} synthetic images -> a stored columnar version: {m['import_s']:.2f} s, "
          f"peak RSS {m['peak_mb']:.0f} MB (process incl. start-up {m['process_s']:.2f} s)")
    print(json.dumps(result, sort_keys=True))


def s3_tables(work: Path, n: int) -> dict[str, float]:
    """Kubeforge importing into S3 against `dvc add` + `dvc push` to the same SeaweedFS server."""
    sys.path.insert(0, str(REPO / "operator"))
    from kubeforge.store.s3 import S3Store
    from kubeforge.testing.seaweedfs import SeaweedFS

    with SeaweedFS(work / "seaweedfs", stop_grace=3.0) as s3:
        env = {**os.environ, **s3.env()}
        os.environ.update(s3.env())
        kf_s3 = S3Store.from_uri("s3://bench-kf/store")
        dvc_bucket = S3Store.from_uri("s3://bench-dvc/cache")
        shutil.rmtree(work / "kf3", ignore_errors=True)
        generate(work / "kf3" / "data", n)
        shutil.rmtree(work / "dvc3", ignore_errors=True)
        shutil.copytree(work / "kf3" / "data", work / "dvc3" / "data")
        kf = kubeforge_run(work / "kf3" / "data", work / "patch", "s3://bench-kf/store", env, restore=False,
                           size=lambda: sum(s for _, s in kf_s3.list_sizes("")))
        dvc = dvc_run(work / "dvc3", work / "patch", s3)
        dvc_b2 = sum(s for _, s in dvc_bucket.list_sizes(""))
        print(table("S3 (SeaweedFS): Kubeforge import into S3 | dvc add + dvc push", [
            ("first version", kf["first_s"], dvc["first_s"] + dvc["push_first_s"], "s"),
            ("second version", kf["incremental_s"], dvc["incremental_s"] + dvc["push_incremental_s"], "s"),
            ("bucket after v2", kf["store_bytes_v2"], dvc_b2, "B")]))
    return {"s3_kubeforge_first_s": round(kf["first_s"], 3),
            "s3_kubeforge_incremental_s": round(kf["incremental_s"], 3),
            "s3_dvc_add_push_first_s": round(dvc["first_s"] + dvc["push_first_s"], 3),
            "s3_dvc_add_push_incremental_s": round(dvc["incremental_s"] + dvc["push_incremental_s"], 3),
            "s3_kubeforge_store_bytes_v2": kf["store_bytes_v2"], "s3_dvc_remote_bytes_v2": dvc_b2}


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--_manifest-child":
        _manifest_child(int(sys.argv[2]), sys.argv[3])
    else:
        main()

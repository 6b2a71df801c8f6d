"""Kubeforge against DVC on the same data: first version, +1% changed/+1% new, restore, store size.

    .venv/bin/python benchmarks/data_versioning.py            # 10,000 files, both tools, local + S3
    .venv/bin/python benchmarks/data_versioning.py --files 500 --no-s3
    .venv/bin/python benchmarks/data_versioning.py --quick     # 2,000 files, 20,000 small files, 200k manifest (~2 min)
    .venv/bin/python benchmarks/data_versioning.py --kubeforge-only --files 200   # what the test runs

Data: N real PNG files of random RGB noise, 53-103 px a side, so 8-32 KB each (noise does not
compress), in 10 class folders: an ImageFolder dataset. Real images are the fair choice:
Kubeforge must read each image's size (it records width and height) where DVC only hashes, and
`--check header` is what the table's rows run (the header is parsed for the size; see
importer.py for what that checks); the default `--check full` is timed on a copy of the same
files as well (kubeforge_full_first_s, _incremental_s, _noop_s). Both tools run as the CLI a
user types, as subprocesses (start-up included), page cache warm (the data was just written),
`sync` before each timed step. DVC comes from its own venv (.bench/dvc-venv, created on first
use with pip). Restoring: `kubeforge datasets checkout v1 DIR` and `dvc checkout` after `git
checkout HEAD~1 -- data.dvc`, both in the folder at v2. Store sizes: every file under the
Kubeforge store (blobs, manifests, stats, import cache) against every file under .dvc/cache.
Also: `kubeforge --help` (help_s, best of 3); into S3 a plain 16-thread upload of the same files
with the same client (s3_plain_parallel_put_s) and the checkout of v2 into an empty folder
against `dvc pull` in a fresh clone; N tiny files (8x8 PNGs, `--small-files`, keys files_100k_*,
peak RSS of the import process); a synthetic N-image manifest (`--manifest-images`). The last
line printed is one JSON object.
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
                  size: callable, check: str = "header") -> dict[str, float]:  # type: ignore[valid-type]
    """v1, (the patch applied by the caller in between), v2, restore v1 into `data`."""
    imp = [*KF, "datasets", "import", str(data), "--dataset", "bench", "--format", "imagefolder",
           "--store", store, "--check", check]
    out: dict[str, float] = {}
    out["first_s"], text = timed(imp, env=env)
    v1 = re.search(r"bench@([0-9a-f]{64})", text).group(1)  # type: ignore[union-attr]
    out["store_bytes_v1"] = size()
    apply_change(patch, data)
    out["incremental_s"], text = timed(imp, env=env)
    out["v2"] = re.search(r"bench@([0-9a-f]{64})", text).group(1)  # type: ignore[union-attr,assignment]
    out["store_bytes_v2"] = size()
    # The same files, nothing changed: what a re-import costs when only the stamps are checked.
    out["noop_s"], _ = timed(imp, env=env)
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

    from kubeforge.datasets.columnar import write_rows
    from kubeforge.store.local import LocalStore

    start = time.perf_counter()
    # Rows in an order that is not the file-name order (the sort is part of the work).
    rows = ((f"class{i % 100}/img{(i * 7919) % n:07d}.jpg", hashlib.sha256(i.to_bytes(8, "little")).hexdigest(),
             8192 + i % 24576, 64 + i % 512, 48 + i % 384, f"class{i % 100}") for i in range(n))
    # Streamed: sorted runs merged on disk, the Parquet manifest written a row group at a time.
    digest, _ = write_rows(LocalStore(store_dir), "synthetic", rows)
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


def timed_rss(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one command: its own rusage (os.wait4), not every child's."""
    subprocess.run(["sync"], check=True)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read()  # type: ignore[union-attr]
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{out.decode(errors='replace')}")
    return elapsed, usage.ru_maxrss / 1024


def help_seconds(runs: int = 3) -> float:
    """`kubeforge --help`, best of `runs` (start-up is what it measures; the best is the least noisy)."""
    return min(timed([*KF, "--help"])[0] for _ in range(runs))


def generate_small(root: Path, n: int) -> None:
    """n distinct tiny PNGs (8x8 grey, ~100 bytes), 100 per folder: the many-small-files case."""
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    ihdr = chunk(b"IHDR", (8).to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0]))
    end = chunk(b"IEND", b"")
    for i in range(n):
        folder = root / f"class{i % CLASSES}" / f"d{i // 1000:04d}"
        if i % 1000 < CLASSES:
            folder.mkdir(parents=True, exist_ok=True)
        rows = b"".join(b"\x00" + (i + r).to_bytes(8, "big") for r in range(8))  # unique pixels per file
        (folder / f"s{i:07d}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + ihdr + chunk(b"IDAT", zlib.compress(rows)) + end)


def small_files_run(work: Path, n: int, with_dvc: bool) -> dict[str, float]:
    """First version of n tiny files: Kubeforge import (its time and peak RSS) against `dvc add`."""
    root = work / "small"
    shutil.rmtree(root, ignore_errors=True)
    generate_small(root / "kf" / "data", n)
    out: dict[str, float] = {}
    out["files_100k_kubeforge_s"], out["files_100k_peak_mb"] = timed_rss(
        [*KF, "datasets", "import", str(root / "kf" / "data"), "--dataset", "small", "--format", "imagefolder",
         "--store", str(root / "kf-store"), "--check", "header"])
    if with_dvc:
        shutil.copytree(root / "kf" / "data", root / "dvc" / "data")
        env = dvc_env(None)
        for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):
            subprocess.run(cmd, cwd=root / "dvc", env=env, check=True, capture_output=True)
        out["files_100k_dvc_s"], _ = timed(["dvc", "add", "data"], cwd=root / "dvc", env=env)
    shutil.rmtree(root, ignore_errors=True)
    return {k: round(v, 3) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--manifest-images", type=int, default=1_000_000)
    ap.add_argument("--small-files", type=int, default=100_000,
                    help="the many-small-files case (keys files_100k_*; 0: skip it)")
    ap.add_argument("--quick", action="store_true",
                    help="smaller sizes for a look on a busy machine: 2,000 files, 20,000 small files, "
                         "200,000-image manifest (explicit size flags win)")
    ap.add_argument("--kubeforge-only", action="store_true", help="no DVC: the test's quick run")
    ap.add_argument("--no-s3", action="store_true")
    ap.add_argument("--check-full", action=argparse.BooleanOptionalAction, default=None,
                    help="also time the local versions with the default `--check full` (keys kubeforge_full_*; "
                         "default: on, except with --kubeforge-only)")
    ap.add_argument("--workdir", type=Path, default=BENCH / "work")
    args = ap.parse_args()
    if args.check_full is None:
        args.check_full = not args.kubeforge_only
    if args.quick:
        given = set(sys.argv)
        if "--files" not in given:
            args.files = 2000
        if "--small-files" not in given:
            args.small_files = 20_000
        if "--manifest-images" not in given:
            args.manifest_images = 200_000
    work: Path = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    (work / "kf").mkdir(parents=True)
    result: dict[str, object] = {"files": args.files, "small_files": args.small_files}
    result["help_s"] = round(help_seconds(), 3)
    print(f"kubeforge --help: {result['help_s']:.3f} s (best of 3)")
    generate(work / "kf" / "data", args.files)
    changed, changed_bytes = make_change(work / "patch", args.files)
    dataset_bytes = tree_bytes(work / "kf" / "data")
    result.update({"changed_files": len(changed), "changed_bytes": changed_bytes, "dataset_bytes": dataset_bytes})
    with_dvc = not args.kubeforge_only
    if with_dvc:
        ensure_dvc()
        shutil.copytree(work / "kf" / "data", work / "dvc" / "data")
    if args.check_full:
        shutil.copytree(work / "kf" / "data", work / "kf-full" / "data")
    kf_store = work / "kf-store"
    kf = kubeforge_run(work / "kf" / "data", work / "patch", str(kf_store), dict(os.environ), restore=True,
                       size=lambda: tree_bytes(kf_store))
    kf.pop("v2")
    result.update({f"kubeforge_{k}": round(v, 3) for k, v in kf.items()})
    if args.check_full:
        full_store = work / "kf-full-store"
        full = kubeforge_run(work / "kf-full" / "data", work / "patch", str(full_store), dict(os.environ),
                             restore=False, size=lambda: tree_bytes(full_store), check="full")
        result.update({"kubeforge_full_first_s": round(full["first_s"], 3),
                       "kubeforge_full_incremental_s": round(full["incremental_s"], 3),
                       "kubeforge_full_noop_s": round(full["noop_s"], 3)})
        print(f"--check full (the default): first {full['first_s']:.2f} s, second {full['incremental_s']:.2f} s, "
              f"unchanged {full['noop_s']:.2f} s")
    if with_dvc:
        dvc = dvc_run(work / "dvc", work / "patch", None)
        result.update({f"dvc_{k}": round(v, 3) for k, v in dvc.items()})
        print(table(f"Local: {args.files} PNG files, {dataset_bytes / 1e6:.1f} MB; 1% changed + 1% new "
                    f"({changed_bytes / 1e6:.2f} MB); --check header", [
                        ("first version (import | dvc add)", kf["first_s"], dvc["first_s"], "s"),
                        ("second version", kf["incremental_s"], dvc["incremental_s"], "s"),
                        ("restore v1 (checkout)", kf["restore_s"], dvc["restore_s"], "s"),
                        ("store after v1", kf["store_bytes_v1"], dvc["cache_bytes_v1"], "B"),
                        ("store after v2", kf["store_bytes_v2"], dvc["cache_bytes_v2"], "B"),
                        ("store growth v1 -> v2", kf["store_bytes_v2"] - kf["store_bytes_v1"],
                         dvc["cache_bytes_v2"] - dvc["cache_bytes_v1"], "B")]))
    if not args.no_s3:
        result.update(s3_tables(work, args.files, with_dvc))
    if args.small_files:
        small = small_files_run(work, args.small_files, with_dvc)
        result.update(small)
        print(f"{args.small_files} small files, first version: kubeforge {small['files_100k_kubeforge_s']:.2f} s "
              f"(peak RSS {small['files_100k_peak_mb']:.0f} MB)"
              + (f", dvc add {small['files_100k_dvc_s']:.2f} s "
                 f"({ratio(small['files_100k_kubeforge_s'], small['files_100k_dvc_s'])})" if with_dvc else ""))
    m = manifest_1m(args.manifest_images, work / "manifest-store")
    result.update({"kubeforge_import_1m_s": m["import_s"], "kubeforge_import_1m_peak_mb": m["peak_mb"],
                   "manifest_images": args.manifest_images})
    print(f"{args.manifest_images} synthetic images -> a stored columnar version: {m['import_s']:.2f} s, "
          f"peak RSS {m['peak_mb']:.0f} MB (process incl. start-up {m['process_s']:.2f} s)")
    print(json.dumps(result, sort_keys=True))


def plain_parallel_put(store: object, root: Path, threads: int = 16) -> float:
    """The baseline: every file of `root` put with the same client (S3Store.put_bytes), `threads` at once."""
    from concurrent.futures import ThreadPoolExecutor

    files = sorted(p for p in root.rglob("*") if p.is_file())
    start = time.perf_counter()

    def put(path: Path) -> None:
        store.put_bytes(f"plain/{path.relative_to(root).as_posix()}", path.read_bytes())  # type: ignore[attr-defined]

    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(put, files))
    return time.perf_counter() - start


def s3_tables(work: Path, n: int, with_dvc: bool = True) -> dict[str, float]:
    """Kubeforge importing into S3 against `dvc add` + `dvc push` to the same SeaweedFS server; a plain
    16-thread upload of the same bytes; checkout into an empty folder against `dvc pull` into a fresh clone."""
    sys.path.insert(0, str(REPO / "operator"))
    from kubeforge.store.s3 import S3Store
    from kubeforge.testing.seaweedfs import SeaweedFS

    with SeaweedFS(work / "seaweedfs", stop_grace=3.0) as s3:
        env = {**os.environ, **s3.env()}
        os.environ.update(s3.env())
        kf_s3 = S3Store.from_uri("s3://bench-kf/store")
        shutil.rmtree(work / "kf3", ignore_errors=True)
        generate(work / "kf3" / "data", n)
        shutil.rmtree(work / "dvc3", ignore_errors=True)
        if with_dvc:
            shutil.copytree(work / "kf3" / "data", work / "dvc3" / "data")
        plain = plain_parallel_put(S3Store.from_uri("s3://bench-plain/store"), work / "kf3" / "data")
        kf = kubeforge_run(work / "kf3" / "data", work / "patch", "s3://bench-kf/store", env, restore=False,
                           size=lambda: sum(s for _, s in kf_s3.list_sizes("")))
        kf_checkout, _ = timed([*KF, "datasets", "checkout", f"bench@{kf['v2']}", str(work / "kf3-checkout"),
                                "--store", "s3://bench-kf/store"], env=env)
        out = {"s3_kubeforge_first_s": round(kf["first_s"], 3),
               "s3_kubeforge_incremental_s": round(kf["incremental_s"], 3),
               "s3_kubeforge_store_bytes_v2": kf["store_bytes_v2"],
               "s3_plain_parallel_put_s": round(plain, 3), "s3_kubeforge_checkout_s": round(kf_checkout, 3)}
        print(f"S3: plain 16-thread put of the same {n} files {plain:.2f} s; Kubeforge first version "
              f"{kf['first_s']:.2f} s ({kf['first_s'] / plain:.2f}x the plain upload)")
        if not with_dvc:
            return out
        dvc_bucket = S3Store.from_uri("s3://bench-dvc/cache")
        dvc = dvc_run(work / "dvc3", work / "patch", s3)
        dvc_b2 = sum(s for _, s in dvc_bucket.list_sizes(""))
        # A fresh clone at v2 (HEAD), its cache empty: `dvc pull` fetches and checks out the data.
        subprocess.run(["git", "clone", "-q", str(work / "dvc3"), str(work / "dvc3-clone")], check=True,
                       capture_output=True)
        dvc_pull, _ = timed(["dvc", "pull"], cwd=work / "dvc3-clone", env=dvc_env(s3))
        print(table("S3 (SeaweedFS): Kubeforge import into S3 | dvc add + dvc push", [
            ("first version", kf["first_s"], dvc["first_s"] + dvc["push_first_s"], "s"),
            ("second version", kf["incremental_s"], dvc["incremental_s"] + dvc["push_incremental_s"], "s"),
            ("v2 into an empty folder | pull", kf_checkout, dvc_pull, "s"),
            ("bucket after v2", kf["store_bytes_v2"], dvc_b2, "B")]))
    out.update({"s3_dvc_add_push_first_s": round(dvc["first_s"] + dvc["push_first_s"], 3),
                "s3_dvc_add_push_incremental_s": round(dvc["incremental_s"] + dvc["push_incremental_s"], 3),
                "s3_dvc_remote_bytes_v2": dvc_b2, "s3_dvc_pull_s": round(dvc_pull, 3)})
    return out


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--_manifest-child":
        _manifest_child(int(sys.argv[2]), sys.argv[3])
    else:
        main()

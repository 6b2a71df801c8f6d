"""A version from rows in bounded memory (`columnar.write_rows`: sorted runs merged on disk) is the
version `ColumnarManifest.from_rows` + `write_version` make: same digest, columns and stats."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest

from kubeforge.datasets.columnar import ColumnarManifest, write_rows
from kubeforge.datasets.versions import load_columnar, write_version
from kubeforge.store import LocalStore, layout


def _rows(n: int, seed: int = 0) -> list[tuple[str, str, int, int, int, str | None]]:
    rng = random.Random(seed)
    rows = [(f"{rng.choice(['a', 'b', 'ü', '日本'])}/{rng.choice(['x', 'y'])}{i:05d} \"q\".png",
             hashlib.sha256(str(i).encode()).hexdigest(), rng.randrange(0, 10**6), rng.randrange(1, 900),
             rng.randrange(1, 900), rng.choice([None, "cat", "dog", "ému"])) for i in range(n)]
    rng.shuffle(rows)
    return rows


@pytest.mark.parametrize("run_rows", [1 << 14, 1 << 18])  # several runs merged, or a single run
def test_write_rows_is_from_rows(tmp_path: Path, run_rows: int) -> None:
    rows = _rows(40_000)
    mem = ColumnarManifest.from_rows("d", rows)
    expected, _ = write_version(LocalStore(tmp_path / "mem"), mem, columnar=True)
    store = LocalStore(tmp_path / "stream")
    digest, created = write_rows(store, "d", iter(rows), run_rows=run_rows, tmpdir=str(tmp_path))
    assert created and digest == expected == mem.digest()
    back = load_columnar(store, "d", digest)  # verified against the digest on load
    assert back.images.equals(mem.images) and back.categories == mem.categories
    stats = json.loads((tmp_path / "stream" / layout.dataset_stats_key("d", digest)).read_text())
    assert stats == json.loads((tmp_path / "mem" / layout.dataset_stats_key("d", digest)).read_text())
    assert write_rows(store, "d", iter(rows), run_rows=run_rows)[1] is False  # already there
    assert not list(tmp_path.glob("kubeforge-rows-*"))  # its temporary files are gone


def test_write_rows_refuses_what_from_rows_refuses(tmp_path: Path) -> None:
    rows = _rows(100)
    store = LocalStore(tmp_path / "s")
    with pytest.raises(ValueError, match="duplicate file names"):
        write_rows(store, "d", [*rows, rows[3]], run_rows=16)
    with pytest.raises(ValueError, match="not a sha256"):
        write_rows(store, "d", [*rows, ("z.png", "nothex", 1, 1, 1, None)])
    with pytest.raises(ValueError, match="widths and heights"):
        write_rows(store, "d", [*rows, ("z.png", "0" * 64, 1, 0, 1, None)])
    with pytest.raises(ValueError, match="no images"):
        write_rows(store, "d", [])
    assert not list((tmp_path / "s").rglob("*.parquet"))  # nothing half-written

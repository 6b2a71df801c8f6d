"""The one atomic-write helper: whole files or none, ordinary modes, no temporary left behind."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from kubeforge.atomic_file import atomic_path, atomic_write_bytes
from kubeforge.store import StoreError, open_store


def test_atomic_write_replaces_whole_files_with_the_umask_mode(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b.json"
    atomic_write_bytes(target, b"one")
    atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600
    assert sorted(p.name for p in target.parent.iterdir()) == ["b.json"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "ckpt.pt"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_open_store_has_no_default_of_its_own() -> None:
    # The one default is kubeforge.local.state.local_store_uri (tests/test_local_state.py).
    with pytest.raises(StoreError, match="no store URI given"):
        open_store("")

"""Atomic local file writes: a reader sees the old file or the whole new one, never a part.

The one helper for every local writer outside the store implementations (state records, run
specs, checked-out and synthesized dataset files, trainer checkpoints and progress): write beside
the target under a unique temporary name, then rename over it. Unique names let two writers of
one path race safely (the last rename wins, neither sees the other's half-written file).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

# mkstemp creates 0600; a finished file gets the mode a plain open() would give it.
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write to (by any means: `torch.save`, a copy, ...).

    Renamed over `path` when the block ends without an error; removed when it raises. Parents
    are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The target's name ends the temporary one: writers that derive something from the file name
    # (torch.save names its archive after it) see a usual one, and a stray temporary says whose it was.
    fd, name = tempfile.mkstemp(prefix=".tmp-", suffix=f"-{path.name[-64:]}", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` atomically (parents created)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_then_replace(tmp: str, path: str, data: bytes, *, exclusive: bool = False) -> None:
    """`data` to the temporary name `tmp`, then renamed over `path`; `tmp` removed on an error.

    The hot-path form of `atomic_write_bytes` (checked-out files, new store blobs): no mkdir,
    mkstemp or chmod, so the caller's folders exist and `tmp` is unique to its writer. The file
    is created with the umask's mode, as by open(); `exclusive`: O_EXCL instead of O_TRUNC.
    """
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    try:
        fd = os.open(tmp, flags, 0o666)  # the umask applies, as to open()
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise

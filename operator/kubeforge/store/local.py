"""A store in a local directory, for laptops, the demo and tests."""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from kubeforge.atomic_file import write_then_replace
from kubeforge.store.base import Store, StoreError

_UMASK = os.umask(0)
os.umask(_UMASK)


class LocalStore(Store):
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._blob_root = str(self.root / "blobs" / "sha256")  # layout.blob_key, as plain strings
        self._blob_dirs: set[str] = set()  # blob folders known to exist: one mkdir each per process
        self._tmp_seq = itertools.count()  # next() on a count is atomic under the GIL

    @property
    def uri(self) -> str:
        return self.root.as_uri()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise StoreError(f"key {key!r} escapes the store root {self.root}")
        return path

    def _atomic_write(self, key: str, write: callable) -> None:  # type: ignore[valid-type]
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        # Write beside the target and rename: readers see nothing or the whole object.
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                write(fh)
            # mkstemp creates 0600; stored artifacts (reports, exports) are for sharing.
            os.chmod(tmp, 0o666 & ~_UMASK)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_bytes(self, key: str, data: bytes) -> None:
        self._atomic_write(key, lambda fh: fh.write(data))

    def put_blob(self, data: bytes) -> str:
        """As Store.put_blob, on the import hot path: a hex digest cannot escape the root, so no
        resolve() (a syscall per path component); one stat skips a blob already stored.

        A new blob is written to a unique temporary name (O_EXCL, created with the umask's
        mode: no fchmod) and renamed into place, so a reader or a crash never leaves a
        partial blob under its digest. No fsync, as for every other object of this store.
        """
        digest = hashlib.sha256(data).hexdigest()
        folder = f"{self._blob_root}/{digest[:2]}"
        dest = f"{folder}/{digest}"
        if os.path.isfile(dest):
            return digest
        if folder not in self._blob_dirs:
            os.makedirs(folder, exist_ok=True)
            self._blob_dirs.add(folder)  # set.add is atomic under the GIL; a repeat mkdir is harmless
        tmp = f"{folder}/.tmp-{os.getpid()}-{threading.get_ident()}-{next(self._tmp_seq)}"
        write_then_replace(tmp, dest, data, exclusive=True)
        return digest

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError):  # a "directory" is not an object (S3 semantics)
            raise KeyError(key) from None

    def put_file(self, key: str, path: Path) -> None:
        def copy(fh) -> None:  # type: ignore[no-untyped-def]
            with open(path, "rb") as src:
                shutil.copyfileobj(src, fh, 1 << 20)

        self._atomic_write(key, copy)

    def get_file(self, key: str, path: Path) -> None:
        src = self._path(key)
        if not src.is_file():
            raise KeyError(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, path)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[str]:
        base = self.root / prefix if prefix else self.root
        # A prefix may end mid-name (S3 semantics: "a" matches "a/x" and "ab/y"): unless it ends
        # with "/", walk its parent and filter.
        walk_root = base if (not prefix or prefix.endswith("/")) else base.parent
        if not walk_root.is_dir():
            return iter(())
        keys = sorted(
            p.relative_to(self.root).as_posix()
            for p in walk_root.rglob("*")
            if p.is_file() and not p.name.startswith(".tmp-")
        )
        return iter(k for k in keys if k.startswith(prefix))

    def list_sizes(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        for key in self.list(prefix):
            yield key, (self.root / key).stat().st_size

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def url(self, key: str) -> str:
        return str(self._path(key))

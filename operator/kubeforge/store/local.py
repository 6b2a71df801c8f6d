"""A store in a local directory, for laptops, the demo and tests."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from kubeforge.store import layout
from kubeforge.store.base import Store, StoreError

_UMASK = os.umask(0)
os.umask(_UMASK)


class LocalStore(Store):
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)

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
        resolve() (a syscall per path component) and one stat to skip blobs already stored."""
        digest = hashlib.sha256(data).hexdigest()
        dest = self.root / layout.blob_key(digest)
        if dest.is_file():
            return digest
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                os.fchmod(fh.fileno(), 0o666 & ~_UMASK)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
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

"""Where raw data is read from: a local directory or an S3 prefix, behind one small interface.

Paths inside a source are '/'-separated and relative to its root. Hidden files and folders
(a name starting with '.', e.g. `.DS_Store`, `.tmp-*` left by an interrupted copy) are
never listed: they are not part of a dataset.
"""

from __future__ import annotations

import errno
import os
from abc import ABC, abstractmethod
from pathlib import Path
from urllib.parse import urlparse

from kubeforge.store.base import Store, StoreError


class SourceError(ValueError):
    """The source cannot be read as asked (missing root, bad URI)."""


class Source(ABC):
    @property
    @abstractmethod
    def uri(self) -> str:
        """The source root, for messages."""

    @abstractmethod
    def list(self) -> list[str]:
        """Every file under the root, relative, sorted."""

    @abstractmethod
    def read(self, path: str) -> bytes:
        """The file's bytes; raises FileNotFoundError naming it when missing."""

    def where(self, path: str) -> str:
        """A full location for messages: the user must find the file from it."""
        return f"{self.uri.rstrip('/')}/{path}"

    def stamp(self, path: str, started_ns: int) -> str | None:
        """What proves the file unchanged since an import that recorded the same stamp
        (`filecache`); None: unknown, read it. `started_ns`: when this import began."""
        return None


def _visible(rel: str) -> bool:
    return not any(part.startswith(".") for part in rel.split("/"))


class LocalSource(Source):
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise SourceError(f"source {self.root}: not a directory")
        # Filled by list(): regular files reached through real folders (relative paths; the absolute
        # one is root + "/" + it, made when needed: no second string per file held).
        self._known: set[str] = set()
        self._root_str = str(self.root)

    @property
    def uri(self) -> str:
        return str(self.root)

    def list(self) -> list[str]:
        """Regular files and symlinks to files; symlinked folders are not followed. A symlink loop
        is an error naming the link: the tree is broken, and silently dropping it hides data."""
        out: list[str] = []
        # Regular files reached through real folders only: they are inside the root by
        # construction, so stamp() and read() skip resolve() (an lstat per path component)
        # for them. Plain strings: pathlib costs more than the syscalls on 10,000 files.
        known: set[str] = set()
        root = self._root_str
        stack = [(root, "")]
        while stack:
            top, rel_top = stack.pop()
            try:
                entries = list(os.scandir(top))
            except OSError as exc:
                raise SourceError(f"{top}: cannot list ({exc.strerror})") from None
            for entry in entries:
                if entry.name.startswith("."):
                    continue  # hidden: never part of a dataset
                rel = f"{rel_top}{entry.name}"
                # DirEntry answers from the directory listing itself: no stat per regular file.
                if entry.is_symlink():
                    self._check_link(Path(entry.path))
                    if entry.is_file():
                        out.append(rel)
                elif entry.is_dir(follow_symlinks=False):
                    stack.append((entry.path, f"{rel}/"))
                elif entry.is_file(follow_symlinks=False):
                    out.append(rel)
                    known.add(rel)
        self._known = known
        return sorted(out)

    def _check_link(self, link: Path) -> None:
        try:
            target = link.resolve(strict=True)
        except (RuntimeError, OSError) as exc:  # 3.11 raises RuntimeError for a loop, later versions OSError
            if isinstance(exc, RuntimeError) or exc.errno == errno.ELOOP:
                raise SourceError(f"{link}: symlink loop") from None
            return  # a dangling link: reported as a missing file if anything refers to it
        if target.is_dir() and (target == link.parent.resolve() or target in link.parent.resolve().parents):
            raise SourceError(f"{link}: symlink loop (points to its own folder or a parent, {target})")

    def _resolve(self, path: str) -> Path:
        try:
            full = (self.root / path).resolve()
        except RuntimeError:
            raise SourceError(f"{self.where(path)}: symlink loop") from None
        # A file name from an annotations file must not reach outside the source.
        if self.root not in full.parents:
            raise SourceError(f"{self.where(path)}: points outside the source {self.root} (a '..' path or a symlink)")
        return full

    def stamp(self, path: str, started_ns: int) -> str | None:
        from kubeforge.datasets.filecache import local_stamp

        try:
            full = f"{self._root_str}/{path}" if path in self._known else None
            st = os.stat(full) if full is not None else self._resolve(path).stat()
        except (OSError, SourceError):
            return None  # missing, unreadable or outside: read() says why
        return local_stamp(st.st_size, st.st_mtime_ns, started_ns)

    def read(self, path: str) -> bytes:
        full = f"{self._root_str}/{path}" if path in self._known else None
        if full is not None:
            # Listed as a regular file in a real folder. O_NOFOLLOW: if it was replaced by a
            # symlink since, take the checked path below instead of following it.
            try:
                fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW)
            except OSError:
                pass  # gone, or now a link: the checked path below says which
            else:
                with open(fd, "rb", closefd=True) as fh:
                    return fh.read()
        return self._read_checked(path)

    def _read_checked(self, path: str) -> bytes:
        full = self._resolve(path)
        try:
            return full.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise FileNotFoundError(f"{self.where(path)}: no such file") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise SourceError(f"{self.where(path)}: symlink loop") from None
            raise


class StoreSource(Source):
    """A source read through a Store rooted at the source prefix (e.g. an S3Store on s3://raw/shapes/)."""

    def __init__(self, store: Store, uri: str | None = None) -> None:
        self.store = store
        self._uri = uri or store.uri

    @property
    def uri(self) -> str:
        return self._uri

    def list(self) -> list[str]:
        list_meta = getattr(self.store, "list_meta", None)
        if list_meta is None:
            return sorted(k for k in self.store.list("") if _visible(k))
        # S3: the listing carries each object's size and ETag, the stamps of `filecache`.
        self._stamps = {k: f"{size}:{etag}" for k, size, etag in list_meta("") if _visible(k) and etag}
        return sorted(k for k in self._stamps)

    def stamp(self, path: str, started_ns: int) -> str | None:
        return getattr(self, "_stamps", {}).get(path)

    def read(self, path: str) -> bytes:
        try:
            return self.store.get_bytes(path)
        except KeyError:
            raise FileNotFoundError(f"{self.where(path)}: no such object") from None


def open_source(uri: str) -> Source:
    """A local path (or file:// URI) or an S3 prefix (s3://bucket/prefix/)."""
    parsed = urlparse(uri)
    if parsed.scheme == "":
        return LocalSource(Path(uri))
    if parsed.scheme == "file":
        return LocalSource(Path(parsed.path))
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise SourceError(f"source {uri!r}: expected s3://bucket/prefix/")
        from kubeforge.store.s3 import S3Store

        # A store rooted at the prefix, so keys are relative paths. Never create the bucket of a
        # source: a mistyped bucket must fail here, not import an empty dataset.
        store = S3Store.from_uri(uri.rstrip("/"), create_bucket=False)
        try:
            store.check()
        except StoreError as exc:
            raise SourceError(f"source {uri}: {exc}") from None
        return StoreSource(store, uri)
    raise SourceError(f"source {uri!r}: expected a local path, file:///path or s3://bucket/prefix/")

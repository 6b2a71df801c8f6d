"""Where raw data is read from: a local directory or an S3 prefix, behind one small interface.

Paths inside a source are '/'-separated and relative to its root. Hidden files and folders
(a name starting with '.', e.g. `.DS_Store`, `.tmp-*` left by an interrupted copy) are
never listed: they are not part of a dataset.
"""

from __future__ import annotations

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


def _visible(rel: str) -> bool:
    return not any(part.startswith(".") for part in rel.split("/"))


class LocalSource(Source):
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().resolve()
        if not self.root.is_dir():
            raise SourceError(f"source {self.root}: not a directory")

    @property
    def uri(self) -> str:
        return str(self.root)

    def list(self) -> list[str]:
        rels = (p.relative_to(self.root).as_posix() for p in self.root.rglob("*") if p.is_file())
        return sorted(r for r in rels if _visible(r))

    def read(self, path: str) -> bytes:
        full = (self.root / path).resolve()
        # A file name from an annotations file must not reach outside the source.
        if self.root not in full.parents:
            raise SourceError(f"{path!r}: points outside the source {self.root}")
        try:
            return full.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise FileNotFoundError(f"{self.where(path)}: no such file") from None


class StoreSource(Source):
    """A source read through a Store rooted at the source prefix (e.g. an S3Store on s3://raw/shapes/)."""

    def __init__(self, store: Store, uri: str | None = None) -> None:
        self.store = store
        self._uri = uri or store.uri

    @property
    def uri(self) -> str:
        return self._uri

    def list(self) -> list[str]:
        return sorted(k for k in self.store.list("") if _visible(k))

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

"""The store interface. Keys are '/'-separated relative paths, laid out by `layout`."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kubeforge.store import layout


class StoreError(RuntimeError):
    """A store operation failed (missing key, bad URI, permission)."""


class StoreUnreachableError(StoreError):
    """The store's endpoint cannot be reached or refuses our credentials."""


class Store(ABC):
    """Every write is atomic from a reader's view: an object is either absent or complete."""

    @property
    @abstractmethod
    def uri(self) -> str:
        """The store's root, e.g. `file:///abs/dir` or `s3://bucket/prefix`."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Raises KeyError when the key does not exist."""

    @abstractmethod
    def put_file(self, key: str, path: Path) -> None: ...

    @abstractmethod
    def get_file(self, key: str, path: Path) -> None:
        """Download to `path` (parents created). Raises KeyError when missing."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]:
        """All keys under `prefix` (recursive), sorted."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove one key; a missing key is not an error."""

    @abstractmethod
    def url(self, key: str) -> str:
        """Where a key lives, for status and for tools (`s3://…` or an absolute path)."""

    def list_sizes(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        """Keys under `prefix` with their sizes in bytes. Implementations override the slow default."""
        for key in self.list(prefix):
            yield key, len(self.get_bytes(key))

    def check(self) -> None:
        """Raise StoreUnreachableError unless the store answers. Cheap; call before long work."""
        return None

    # Conveniences built on the primitives.
    def put_json(self, key: str, obj: Any) -> None:
        self.put_bytes(key, json.dumps(obj, indent=2, sort_keys=True).encode())

    def get_json(self, key: str) -> Any:
        return json.loads(self.get_bytes(key))

    def put_blob(self, data: bytes) -> str:
        """Store content once, by its sha256; returns the hex digest."""
        digest = hashlib.sha256(data).hexdigest()
        key = layout.blob_key(digest)
        if not self.exists(key):
            self.put_bytes(key, data)
        return digest

    def get_blob(self, digest: str) -> bytes:
        return self.get_bytes(layout.blob_key(digest))

    def put_tree(self, prefix: str, root: Path) -> list[str]:
        """Upload every file under `root` to `prefix/…`; returns the keys written."""
        keys = []
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            key = f"{prefix.rstrip('/')}/{path.relative_to(root).as_posix()}"
            self.put_file(key, path)
            keys.append(key)
        return keys

    def get_tree(self, prefix: str, root: Path) -> list[Path]:
        """Download every key under `prefix/` into `root`, keeping relative paths."""
        prefix = prefix.rstrip("/") + "/"
        paths = []
        for key in self.list(prefix):
            dest = root / key[len(prefix):]
            self.get_file(key, dest)
            paths.append(dest)
        return paths

"""What an exporter writes into: a local folder being built, plus a record of what the format lost."""

from __future__ import annotations

from pathlib import Path


class ExportError(ValueError):
    """The version cannot be written in the asked format, or the destination refuses it."""


class ExportTree:
    """Files of one export under a (temporary) local root. Images are only named here; the
    exporter fetches their blobs afterwards, in parallel."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.images: dict[str, str] = {}  # relative path -> blob sha256
        self.losses: dict[str, int] = {}  # what the format cannot hold -> how many times

    def _path(self, rel: str) -> Path:
        if rel.startswith("/") or ".." in rel.split("/"):
            raise ExportError(f"{rel!r}: an exported path must stay inside the export folder")
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def text(self, rel: str, content: str) -> None:
        self._path(rel).write_text(content, encoding="utf-8")

    def file(self, rel: str, data: bytes) -> None:
        """A file the exporter makes itself (a mask PNG), written now."""
        self._path(rel).write_bytes(data)

    def image(self, rel: str, blob: str) -> None:
        if rel in self.images or (self.root / rel).exists():
            raise ExportError(f"{rel}: two images would be written to the same file")
        self.images[rel] = blob

    def lose(self, what: str, count: int = 1) -> None:
        self.losses[what] = self.losses.get(what, 0) + count

"""File names a version can store safely, checked before any format parser reads the source.

A manifest stores each image's path as UTF-8 JSON and exports write it back as a file name, so a
name with control characters (a newline splits every line-based list: YOLO's train.txt, VOC's
image sets) or bytes that are not UTF-8 (Python hands them over as surrogates) cannot round-trip.
"""

from __future__ import annotations

import unicodedata

from kubeforge.datasets.draft import DatasetImportError


def unsafe_reason(rel: str) -> str:
    """Why `rel` cannot be stored as a file name; empty when it can."""
    for ch in rel:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:
            return "the name holds bytes that are not UTF-8"
        if unicodedata.category(ch) == "Cc":
            return f"the name holds the control character {ch!r}"
    return ""


def printable(rel: str) -> str:
    """`rel` as a message shows it: bytes that are not UTF-8 as `\\xNN` (the byte the file system holds),
    control characters escaped (`\\n`, `\\x07`), every other character as it is (`été` stays)."""
    try:
        text = rel.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate no file system name decodes to
        return ascii(rel)[1:-1]
    return "".join(ascii(ch)[1:-1] if unicodedata.category(ch) == "Cc" else ch for ch in text)


def screen_names(where_of: object, files: list[str], on_invalid: str) -> tuple[list[str], list[tuple[str, str]]]:
    """(the files that can be stored, [(location, reason)] for those left out under Skip).

    `where_of`: the source (its `where(rel)` gives a full location). With `Fail`, the first
    unsafe name raises, naming it with `printable()` so the message itself is printable.
    """
    keep: list[str] = []
    skipped: list[tuple[str, str]] = []
    for rel in files:
        why = unsafe_reason(rel)
        if not why:
            keep.append(rel)
            continue
        where = where_of.where(printable(rel))  # type: ignore[attr-defined]
        if on_invalid == "Fail":
            raise DatasetImportError(
                f"{where}: {why}; rename it (spec.onInvalidImage is Fail; set it to Skip to leave such files out)"
            )
        skipped.append((where, why))
    return keep, skipped

"""`--check full` on plain PNGs without PIL (`importer._png_full_size`) accepts exactly what PIL's
verify() + load() accept: valid images of every plain mode, and never damaged ones (those go to
PIL, whose message is kept)."""

from __future__ import annotations

import io
import random
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from kubeforge.datasets import importer


def _png(mode: str, size: tuple[int, int], seed: int = 0, **save: object) -> bytes:
    rng = np.random.default_rng(seed)
    w, h = size
    if mode == "1":
        img = Image.fromarray(rng.integers(0, 2, (h, w), dtype=np.uint8).astype(bool))
    elif mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65535, (h, w), dtype=np.uint16))
    else:
        bands = len(mode)
        arr = rng.integers(0, 256, (h, w, bands) if bands > 1 else (h, w), dtype=np.uint8)
        img = Image.fromarray(arr, mode=mode) if bands > 1 else Image.fromarray(arr)
    buf = io.BytesIO()
    img.save(buf, format="PNG", **save)
    return buf.getvalue()


def _pil_only(data: bytes, monkeypatch: pytest.MonkeyPatch) -> tuple[int, int] | str:
    with monkeypatch.context() as m:
        m.setattr(importer, "_png_full_size", lambda data: None)
        try:
            return importer.decode_size(data, "full")
        except ValueError as exc:
            return str(exc)


def _ours(data: bytes) -> tuple[int, int] | str:
    try:
        return importer.decode_size(data, "full")
    except ValueError as exc:
        return str(exc)


VALID = [("L", (7, 5)), ("RGB", (64, 33)), ("RGBA", (3, 90)), ("LA", (31, 2)), ("1", (13, 9)), ("I;16", (17, 4)),
         ("RGB", (1, 1))]


@pytest.mark.parametrize(("mode", "size"), VALID)
def test_valid_plain_pngs_are_accepted_without_pil(mode: str, size: tuple[int, int],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    data = _png(mode, size)
    assert importer._png_full_size(data) == size  # the fast path took it
    assert _ours(data) == _pil_only(data, monkeypatch) == size


@pytest.mark.parametrize("save", [{"optimize": True}, {"compress_level": 0}, {"compress_level": 9}])
def test_other_encodings_too(save: dict[str, object]) -> None:
    data = _png("RGB", (40, 30), **save)
    assert importer._png_full_size(data) == (40, 30)


def test_unusual_pngs_go_to_pil(monkeypatch: pytest.MonkeyPatch) -> None:
    pal = io.BytesIO()
    Image.new("P", (8, 8)).save(pal, format="PNG")  # a palette: PIL's business
    interlaced = bytearray(_png("RGB", (8, 8)))
    interlaced[28] = 1  # IHDR says Adam7
    interlaced[29:33] = struct.pack(">I", zlib.crc32(bytes(interlaced[12:29])))
    for data in (pal.getvalue(), bytes(interlaced)):
        assert importer._png_full_size(data) is None
        assert _ours(data) == _pil_only(data, monkeypatch)


def _chunks(data: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 8
    while pos < len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        out.append((pos, kind))
        pos += 12 + length
    return out


def _with_chunk_body(data: bytes, kind: bytes, body: bytes) -> bytes:
    """Replace the first `kind` chunk's body (CRC recomputed: only the content is wrong)."""
    for pos, k in _chunks(data):
        if k == kind:
            length = struct.unpack_from(">I", data, pos)[0]
            chunk = struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
            return data[:pos] + chunk + data[pos + 12 + length:]
    raise AssertionError(kind)


def _damaged(data: bytes, rng: random.Random) -> list[bytes]:
    idat = next(pos for pos, k in _chunks(data) if k == b"IDAT")
    idat_len = struct.unpack_from(">I", data, idat)[0]
    body = data[idat + 8: idat + 8 + idat_len]
    raw = zlib.decompress(body)
    out = [data[:n] for n in (len(data) - 1, len(data) - 12, idat + 20, idat + 8 + idat_len // 2)]  # truncated
    flipped = bytearray(data)
    flipped[idat + 8 + idat_len // 2] ^= 0x40  # a pixel byte changed, CRC left: CRC error
    out.append(bytes(flipped))
    out.append(_with_chunk_body(data, b"IDAT", zlib.compress(raw[:-5])))  # short pixel data, CRC fine
    out.append(_with_chunk_body(data, b"IDAT", zlib.compress(raw + b"\x00" * 50)))  # too much pixel data
    bad_filter = bytearray(raw)
    bad_filter[0] = 9  # filter type 9 does not exist
    out.append(_with_chunk_body(data, b"IDAT", zlib.compress(bytes(bad_filter))))
    out.append(_with_chunk_body(data, b"IDAT", zlib.compress(raw)[:-4]))  # zlib stream without its Adler-32
    out.append(data + b"trailing bytes")
    out.append(data[:-12])  # no IEND
    for _ in range(20):
        noisy = bytearray(data)
        noisy[rng.randrange(8, len(data))] ^= 1 << rng.randrange(8)
        out.append(bytes(noisy))
    return out


@pytest.mark.parametrize(("mode", "size"), VALID[:4])
def test_damaged_pngs_get_pils_verdict(mode: str, size: tuple[int, int], monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(len(mode))
    damaged = _damaged(_png(mode, size, seed=3), rng)
    # PIL refuses most (it lets a missing Adler-32, extra pixel data or trailing bytes pass, and so
    # does `--check full` then: the fast path leaves every doubtful file to PIL).
    assert sum(isinstance(_pil_only(d, monkeypatch), str) for d in damaged[:12]) >= 6
    for data in damaged:
        fast = importer._png_full_size(data)
        pil = _pil_only(data, monkeypatch)
        if fast is not None:  # accepted without PIL only where PIL accepts too
            assert pil == fast, (mode, pil)
        assert _ours(data) == pil

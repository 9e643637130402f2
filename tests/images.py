"""Small in-memory test images."""

from __future__ import annotations

import io

from PIL import Image


def jpeg_bytes(size: tuple[int, int] = (300, 225), **save: object) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (170, 110, 80)).save(buf, format="JPEG", **save)
    return buf.getvalue()


def png_bytes(size: tuple[int, int]) -> bytes:
    """A flat greyscale PNG: tiny on disk even when huge in pixels (a decompression bomb when large)."""
    buf = io.BytesIO()
    Image.new("L", size, 0).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _jpeg_segments(data: bytes) -> list[bytes]:
    """A JPEG's marker segments after SOI, each scan with its entropy-coded data, EOI last."""
    i, out = 2, []
    while i < len(data):
        marker = data[i + 1]
        if marker == 0xD9:
            out.append(data[i:i + 2])
            break
        end = i + 2 + int.from_bytes(data[i + 2:i + 4], "big")
        if marker == 0xDA:  # entropy-coded data runs to the next marker other than a stuffed 0xFF or a restart
            while True:
                end = data.index(b"\xff", end)
                if data[end + 1] == 0x00 or 0xD0 <= data[end + 1] <= 0xD7:
                    end += 2
                    continue
                break
        out.append(data[i:end])
        i = end
    return out


def scan_bomb_jpeg(scans: int, size: tuple[int, int] = (64, 48)) -> bytes:
    """A progressive JPEG whose last scan is repeated to ``scans`` scans in all: small file, costly decode."""
    buf = io.BytesIO()
    Image.new("RGB", size, (170, 110, 80)).save(buf, format="JPEG", progressive=True)
    segments = _jpeg_segments(buf.getvalue())
    sos = [s for s in segments if s[1] == 0xDA]
    body = b"".join(segments[:-1])
    return b"\xff\xd8" + body + sos[-1] * (scans - len(sos)) + b"\xff\xd9"

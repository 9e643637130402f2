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



def scan_bomb_jpeg(scans: int, size: tuple[int, int] = (64, 48)) -> bytes:
    """A progressive JPEG of ``scans`` scans (the benchmark's generator: one definition of the attack file)."""
    from scripts.bench_webapp import scan_bomb_jpeg as make

    return make(scans, size)

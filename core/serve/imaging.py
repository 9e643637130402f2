"""Validation of uploaded images: content checked (not the file name), size-limited, bomb-safe.

Used by every front end that accepts an image from a person (dashboard live panel, web app).
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from core.errors import LesionLiteError

MAGIC = {"JPEG": (b"\xff\xd8\xff",), "PNG": (b"\x89PNG\r\n\x1a\n",)}
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
# JPEGs are decoded at a reduced scale (draft mode), so their cost is bounded: a 48 MP phone photo is fine.
# A PNG is decoded in full and compresses flat areas ~1000:1: a 100 KB file can cost seconds and hundreds of MB.
DEFAULT_MAX_PIXELS = {"JPEG": 50_000_000, "PNG": 5_000_000}
KEEP_SIDE = 1024  # kept (and shown back) at most this size; every model here reads 224 px or less
MIN_SIDE = 32
# A progressive JPEG's decode cost grows with its number of scans, which no pixel limit or draft mode bounds: a
# 0.4 MB file of ~2,000 scans cost 16 s of CPU. Encoders write at most a dozen or so (libjpeg's default script: 10;
# an EXIF thumbnail or an MPO's second picture adds its own), so a few dozen is generous.
MAX_JPEG_SCANS = 48
# What is actually decoded after draft mode; draft cannot reduce a 65000x769 strip (its short side is already
# small), so the decoded size gets its own cap.
MAX_DECODED_PIXELS = 16_000_000
# Pillow reads a JPEG's markers before the first scan, and every PNG chunk, one at a time in Python: a 10 MB file
# of 9.9 M fill bytes, 2.5 M empty APP5 markers or 825 k empty PNG chunks cost 3-8 s of CPU where a photo costs
# 25-50 ms. Real files are far inside these bounds (a phone JPEG: a dozen markers, EXIF/XMP/ICC well under 1 MB; a
# PNG: a few ancillary chunks, and IDAT chunks of 8-64 KB each), which are checked before any decoding.
MAX_JPEG_HEADER_MARKERS = 256
MAX_JPEG_FILL_BYTES = 1024  # 0xFF padding before markers, in the whole file
MAX_JPEG_HEADER_BYTES = 2 * 1024 * 1024  # bytes before the first start-of-scan
MAX_PNG_CHUNKS = 10_000
MAX_PNG_ANCILLARY_CHUNKS = 256
MAX_PNG_ANCILLARY_BYTES = 2 * 1024 * 1024
_RESAVE = "save it again as an ordinary JPEG or PNG and retry"


class ImageRejected(LesionLiteError):
    """An uploaded file is not an acceptable image; the message says why, for the person who sent it."""


@dataclass(frozen=True)
class CheckedImage:
    image: Image.Image  # RGB, EXIF orientation applied, longer side at most KEEP_SIDE
    format: str  # "JPEG" or "PNG"
    width: int  # as uploaded
    height: int


def sniff_format(data: bytes) -> str | None:
    for fmt, prefixes in MAGIC.items():
        if any(data.startswith(p) for p in prefixes):
            return fmt
    return None


def jpeg_scan_count(data: bytes) -> int:
    """Start-of-scan markers in a JPEG stream (an upper bound on its scans: entropy-coded data never holds one,
    since a 0xFF byte there is always followed by 0x00 or a restart marker)."""
    return data.count(b"\xff\xda")


def jpeg_structure_problem(data: bytes) -> str | None:
    """Why a JPEG's structure would cost far more to read than its pixels (None: within the bounds). Walks the
    markers up to the first start-of-scan without decoding anything."""
    if data.count(b"\xff\xff") > MAX_JPEG_FILL_BYTES:  # entropy-coded data never holds 0xFF 0xFF
        return f"the JPEG holds more than {MAX_JPEG_FILL_BYTES:,} padding bytes"
    pos, markers = 2, 0
    while pos < len(data):
        if pos > MAX_JPEG_HEADER_BYTES:
            return f"the JPEG has more than {MAX_JPEG_HEADER_BYTES // (1024 * 1024)} MB before its image data"
        if data[pos] != 0xFF:
            return None  # not a marker where one belongs: the decoder reports the damage
        while pos < len(data) and data[pos] == 0xFF:
            pos += 1
        if pos >= len(data):
            return None
        marker, pos = data[pos], pos + 1
        markers += 1
        if markers > MAX_JPEG_HEADER_MARKERS:
            return f"the JPEG has more than {MAX_JPEG_HEADER_MARKERS} markers before its image data"
        if marker == 0xDA:  # start of scan: the rest is image data, read by libjpeg in C
            return None
        if marker in (0x01, *range(0xD0, 0xD9)):  # TEM, RSTn, SOI: no length field
            continue
        if pos + 2 > len(data):
            return None
        pos += int.from_bytes(data[pos:pos + 2], "big")
    return None


def png_structure_problem(data: bytes) -> str | None:
    """Why a PNG's chunk structure would cost far more to read than its pixels (None: within the bounds)."""
    pos, chunks, ancillary, ancillary_bytes = 8, 0, 0, 0
    while pos + 8 <= len(data):
        length, kind = int.from_bytes(data[pos:pos + 4], "big"), data[pos + 4:pos + 8]
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            return f"the PNG has more than {MAX_PNG_CHUNKS:,} chunks"
        if kind[:1].islower():  # ancillary chunk (PNG spec: bit 5 of the first byte)
            ancillary += 1
            ancillary_bytes += length
            if ancillary > MAX_PNG_ANCILLARY_CHUNKS or ancillary_bytes > MAX_PNG_ANCILLARY_BYTES:
                return (f"the PNG has more than {MAX_PNG_ANCILLARY_CHUNKS} extra chunks or "
                        f"{MAX_PNG_ANCILLARY_BYTES // (1024 * 1024)} MB of extra data besides the image")
        if kind == b"IEND":
            return None
        pos += 12 + length
    return None


def draft_target(width: int, height: int, keep_side: int) -> tuple[int, int]:
    """The size to ask of JPEG draft mode: ``keep_side`` on the longer side, the aspect ratio kept, so that the
    reduction is chosen from the longer side (asking for ``keep_side`` on both would keep a long strip whole)."""
    scale = keep_side / max(width, height, 1)
    return max(1, math.ceil(width * scale)), max(1, math.ceil(height * scale))


def _to_rgb(img: Image.Image) -> Image.Image:
    """RGB for any accepted mode; 16-bit and 32-bit greyscale are scaled to 8 bits, not clipped to white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        values = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") else max(float(values.max()), 1.0)
        img = Image.fromarray(np.clip(values / top * 255.0, 0, 255).astype(np.uint8), mode="L")
    return img.convert("RGB")


def check_image(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES, max_pixels: dict[str, int] | None = None,
                min_side: int = MIN_SIDE, keep_side: int = KEEP_SIDE) -> CheckedImage:
    """Accept only a complete JPEG or PNG within the limits, or raise :class:`ImageRejected` saying why.

    Messages are fixed sentences: decoder exception texts (which can hold memory addresses) never reach a person.
    """
    if not data:
        raise ImageRejected("the file is empty")
    if len(data) > max_bytes:
        raise ImageRejected(f"the file is {len(data) / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB")
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageRejected("not a JPEG or PNG image (the content was checked, not the file name)")
    limit = (max_pixels or DEFAULT_MAX_PIXELS)[fmt]
    if fmt == "JPEG" and jpeg_scan_count(data) > MAX_JPEG_SCANS:
        raise ImageRejected(f"the JPEG has an unusual structure (too many scans); {_RESAVE}")
    problem = jpeg_structure_problem(data) if fmt == "JPEG" else png_structure_problem(data)
    if problem:
        raise ImageRejected(f"{problem}, far more than a photo needs; {_RESAVE}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                width, height = probe.size
                if probe.format != fmt and not (fmt == "JPEG" and probe.format == "MPO"):  # MPO: phone JPEGs
                    raise ImageRejected(f"the file starts like {fmt} but does not decode as one")
                if width * height > limit:
                    raise ImageRejected(f"the image is {width}x{height} pixels: too large (at most {limit:,} "
                                        f"pixels are accepted for {fmt})")
                probe.verify()
            with Image.open(io.BytesIO(data)) as img:
                img.draft("RGB", draft_target(width, height, keep_side))  # JPEG: decode at 1/2, 1/4 or 1/8 scale
                if img.size[0] * img.size[1] > MAX_DECODED_PIXELS:
                    raise ImageRejected(f"the image is {width}x{height} pixels: too large to decode (its shape "
                                        "cannot be reduced while decoding)")
                img.load()  # verify() does not catch every truncation; a full decode does (MPO: the first picture)
                rgb = _to_rgb(ImageOps.exif_transpose(img))
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageRejected("the image is too large when decoded (possible decompression bomb)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError):
        raise ImageRejected("the image is damaged or truncated") from None
    if min(width, height) < min_side:
        raise ImageRejected(f"the image is {width}x{height} pixels; at least {min_side} pixels on each side are needed")
    rgb.thumbnail((keep_side, keep_side), Image.Resampling.LANCZOS)  # no-op when already small enough
    return CheckedImage(rgb, fmt, width, height)


def reencode_jpeg(image: Image.Image, *, quality: int = 92) -> bytes:
    """Re-encode as a baseline JPEG without metadata (EXIF, GPS, comments are dropped)."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()

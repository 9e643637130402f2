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
        raise ImageRejected("the JPEG has an unusual structure (too many scans); save it again as an ordinary "
                            "JPEG or PNG and retry")
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

"""Validation of uploaded images: content checked (not the file name), size-limited, bomb-safe.

Used by every front end that accepts an image from a person (dashboard live panel, web app).
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from core.errors import LesionLiteError

MAGIC = {"JPEG": (b"\xff\xd8\xff",), "PNG": (b"\x89PNG\r\n\x1a\n",)}
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
# JPEGs are decoded at a reduced scale (draft mode), so their cost is bounded: a 48 MP phone photo is fine.
# A PNG is decoded in full and compresses flat areas ~1000:1: a 100 KB file can cost seconds and hundreds of MB.
DEFAULT_MAX_PIXELS = {"JPEG": 50_000_000, "PNG": 5_000_000}
KEEP_SIDE = 1024  # kept (and shown back) at most this size; every model here reads 224 px or less
MIN_SIDE = 32


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
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                width, height = probe.size
                if probe.format != fmt:
                    raise ImageRejected(f"the file starts like {fmt} but does not decode as one")
                if width * height > limit:
                    raise ImageRejected(f"the image is {width}x{height} pixels: too large (at most {limit:,} "
                                        f"pixels are accepted for {fmt})")
                probe.verify()
            with Image.open(io.BytesIO(data)) as img:
                img.draft("RGB", (keep_side, keep_side))  # JPEG: decode at 1/2, 1/4 or 1/8 scale when large
                img.load()  # verify() does not catch every truncation; a full decode does
                rgb = ImageOps.exif_transpose(img).convert("RGB")
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

"""Upload validation: content-checked, size-limited, bomb-safe, with a clear reason for each refusal."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from core.imaging import ImageRejected, check_image, reencode_jpeg
from tests.images import jpeg_bytes, png_bytes


def test_accepts_jpeg_and_png_and_strips_exif() -> None:
    exif = Image.Exif()
    exif[0x010E] = "patient name"  # ImageDescription
    checked = check_image(jpeg_bytes((200, 150), exif=exif.tobytes()))
    assert checked.format == "JPEG" and (checked.width, checked.height) == (200, 150)
    assert check_image(png_bytes((64, 64))).format == "PNG"
    assert b"patient name" not in reencode_jpeg(checked.image)


@pytest.mark.parametrize(("data", "reason"), [
    (b"", "empty"),
    (b"hello, this is a text file renamed .jpg", "not a JPEG or PNG"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>", "not a JPEG or PNG"),
    (b"GIF89a" + b"\x00" * 100, "not a JPEG or PNG"),
    (jpeg_bytes()[:400], "damaged or truncated"),
    (jpeg_bytes((1, 1)), "at least 32 pixels"),
    (png_bytes((12000, 12000)), "too large"),  # a decompression bomb: tiny file, huge image (PIL's own guard)
    (png_bytes((7000, 7000)), "too large (at most"),  # under PIL's guard, over ours
])
def test_rejections_name_the_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ImageRejected) as err:
        check_image(data)
    assert reason in str(err.value)


def test_size_limit() -> None:
    with pytest.raises(ImageRejected, match="the limit is 1 MB"):
        check_image(jpeg_bytes() + b"\x00" * 1_100_000, max_bytes=1_000_000)


def test_real_samples_are_accepted(samples_dir: Path) -> None:
    for path in sorted(samples_dir.glob("*.jpg"))[:5]:
        checked = check_image(path.read_bytes())
        assert (checked.width, checked.height) == (600, 450)

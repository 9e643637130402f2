"""Upload validation: content-checked, size-limited, bomb-safe, with a clear reason for each refusal."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from PIL import Image

from core.serve.imaging import ImageRejected, check_image, reencode_jpeg
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
    (png_bytes((6000, 6600)), "at most 5,000,000 pixels are accepted for PNG"),  # 131 KB, seconds to decode
    (b"\xff\xd8\xff\xe0" + b"\x00" * 20, "the image is damaged or truncated"),  # header only
])
def test_rejections_name_the_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ImageRejected) as err:
        check_image(data)
    assert reason in str(err.value)
    assert not re.search(r"0x[0-9a-f]{6,}|<|BytesIO", str(err.value))  # no decoder internals, no memory addresses


def test_large_jpeg_is_decoded_at_reduced_scale_and_kept_small() -> None:
    big = jpeg_bytes((6000, 4000))  # a 24 MP phone photo: accepted, decoded in draft mode, kept at 1024 px
    checked = check_image(big)
    assert (checked.width, checked.height) == (6000, 4000)
    assert max(checked.image.size) == 1024 and checked.image.size[0] > checked.image.size[1]
    small = check_image(jpeg_bytes((600, 450)))
    assert small.image.size == (600, 450)


def test_size_limit() -> None:
    with pytest.raises(ImageRejected, match="the limit is 1 MB"):
        check_image(jpeg_bytes() + b"\x00" * 1_100_000, max_bytes=1_000_000)


def test_real_samples_are_accepted(samples_dir: Path) -> None:
    for path in sorted(samples_dir.glob("*.jpg"))[:5]:
        checked = check_image(path.read_bytes())
        assert (checked.width, checked.height) == (600, 450)


def test_a_progressive_jpeg_scan_bomb_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 21, item 1: thousands of scans cost seconds of CPU whatever the pixel count; refused unread."""
    import time

    import core.serve.imaging as imaging
    from tests.images import scan_bomb_jpeg

    bomb = scan_bomb_jpeg(2000)
    assert len(bomb) < 400_000 and bomb.count(b"\xff\xda") >= 2000
    opened, real_open = [], Image.open
    monkeypatch.setattr(imaging.Image, "open", lambda *a, **k: opened.append(a) or real_open(*a, **k))
    start = time.perf_counter()
    with pytest.raises(ImageRejected, match="too many scans"):
        check_image(bomb)
    assert not opened and time.perf_counter() - start < 0.5
    ordinary = io.BytesIO()
    Image.new("RGB", (640, 480), (170, 110, 80)).save(ordinary, format="JPEG", progressive=True, optimize=True)
    assert check_image(ordinary.getvalue()).format == "JPEG"  # an ordinary progressive JPEG (10 scans) is fine


def test_a_wide_strip_is_decoded_at_reduced_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 21, item 2: a 65000x769 JPEG has a short side draft mode kept whole; the reduction now follows the
    longer side, and what is decoded is capped."""
    from PIL import ImageFile

    buf = io.BytesIO()
    Image.new("L", (65000, 769), 120).save(buf, format="JPEG", progressive=True)
    decoded: list[tuple[int, int]] = []
    real_load = ImageFile.ImageFile.load

    def spy(self: ImageFile.ImageFile):
        decoded.append(self.size)
        return real_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    checked = check_image(buf.getvalue())
    assert (checked.width, checked.height) == (65000, 769) and max(checked.image.size) == 1024
    assert decoded and decoded[-1][0] * decoded[-1][1] <= 65000 * 769 / 64 + 10_000  # 1/8 scale: 8125x97


def test_phone_mpo_and_16_bit_png_are_read_as_the_pictures_they_are() -> None:
    """Issue 21, item 10: a multi-picture phone JPEG is a JPEG (its first picture); a 16-bit grey PNG keeps its
    tones instead of turning white."""
    import numpy as np

    first, second = Image.new("RGB", (320, 240), (170, 110, 80)), Image.new("RGB", (320, 240), (20, 20, 20))
    buf = io.BytesIO()
    first.save(buf, format="MPO", save_all=True, append_images=[second])
    checked = check_image(buf.getvalue())
    assert checked.format == "JPEG" and abs(np.asarray(checked.image)[..., 0].mean() - 170) < 5
    ramp = Image.fromarray((np.linspace(0, 65535, 96 * 64).reshape(64, 96)).astype(np.uint16))
    buf = io.BytesIO()
    ramp.save(buf, format="PNG")
    grey = np.asarray(check_image(buf.getvalue()).image)[..., 0]
    assert grey.min() < 10 and grey.max() > 245 and 100 < grey.mean() < 155


def _padded_jpeg_fill(n: int) -> bytes:
    data = jpeg_bytes()
    return data[:2] + b"\xff" * n + data[2:]  # fill bytes before the first marker after SOI


def _padded_jpeg_app5(n: int) -> bytes:
    data = jpeg_bytes()
    return data[:2] + b"\xff\xe5\x00\x02" * n + data[2:]  # empty APP5 segments


def _padded_png(n: int) -> bytes:
    import struct
    import zlib

    data = png_bytes((300, 225))
    empty = struct.pack(">I", 0) + b"tEXt" + struct.pack(">I", zlib.crc32(b"tEXt"))
    return data[:33] + empty * n + data[33:]  # after IHDR (8 + 25 bytes), before IDAT


@pytest.mark.parametrize(("make", "reason"), [
    (lambda: _padded_jpeg_fill(9_900_000), "padding bytes"),
    (lambda: _padded_jpeg_app5(2_400_000), "markers before its image data"),
    (lambda: _padded_png(820_000), "extra chunks"),
])
def test_padded_headers_are_refused_before_decoding_in_a_fraction_of_a_second(make, reason: str) -> None:
    """Issue 33: files of ~10 MB that Pillow reads one marker or chunk at a time (seconds of CPU each) are refused
    with a clear message, at a bounded cost, before any decoding."""
    import time

    data = make()
    assert 9_000_000 < len(data) <= 10 * 1024 * 1024
    start = time.process_time()
    with pytest.raises(ImageRejected, match=reason) as refused:
        check_image(data)
    assert time.process_time() - start < 0.5  # generous for a busy CI machine; bench_webapp measures it alone
    assert "save it again as an ordinary JPEG or PNG" in str(refused.value)


def test_modest_padding_is_still_accepted() -> None:
    for data in (_padded_jpeg_fill(100), _padded_jpeg_app5(50), _padded_png(100)):
        assert check_image(data).width > 0

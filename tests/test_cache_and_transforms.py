"""The decoded-image cache (hit, invalidation, bad images) and preprocessing from the model's config."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import core.data.cache as cache_mod
from core.data.cache import build_cache
from core.data.layout import load_table
from core.data.transforms import eval_transform, preprocess_image, preprocessing_for, train_transform
from core.errors import DatasetError
from core.models import create_model


def test_cache_roundtrip_and_hit(synthetic_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    table = load_table(synthetic_copy)
    cache = build_cache(table, size=40, cache_dir=tmp_path / "c")
    assert cache.array.shape == (len(table), 40, 40, 3) and cache.array.dtype == np.uint8
    assert cache.array[:5].std() > 0
    # A second build must not decode anything.
    monkeypatch.setattr(cache_mod, "_decode", lambda *a: pytest.fail("cache hit expected, but an image was decoded"))
    again = build_cache(table, size=40, cache_dir=tmp_path / "c")
    np.testing.assert_array_equal(again.array[:5], cache.array[:5])


def test_cache_invalidated_by_resolution_and_source(synthetic_copy: Path, tmp_path: Path) -> None:
    table = load_table(synthetic_copy)
    a = build_cache(table, size=40, cache_dir=tmp_path / "c")
    b = build_cache(table, size=48, cache_dir=tmp_path / "c")
    assert a.path != b.path and b.array.shape[1] == 48
    victim = Path(table["path"][0])
    st = victim.stat()
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # source changed
    c = build_cache(table, size=40, cache_dir=tmp_path / "c")
    assert c.path != a.path


def _damage(data: Path) -> tuple[str, str]:
    jpgs = sorted(data.rglob("*.jpg"))
    truncated, text = jpgs[0], jpgs[1]
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 3])
    text.write_text("this is not an image")
    return truncated.stem, text.stem


def test_bad_images_are_listed_not_dropped(synthetic_copy: Path, tmp_path: Path) -> None:
    truncated, text = _damage(synthetic_copy)
    with pytest.raises(DatasetError) as err:
        build_cache(load_table(synthetic_copy), size=40, cache_dir=tmp_path / "c")
    msg = str(err.value)
    assert "2 unreadable image(s)" in msg and truncated in msg and text in msg and "--skip-bad" in msg


def test_skip_bad_counts_and_logs(synthetic_copy: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _damage(synthetic_copy)
    with caplog.at_level(logging.WARNING):
        cache = build_cache(load_table(synthetic_copy), size=40, cache_dir=tmp_path / "c", skip_bad=True)
    assert len(cache.bad) == 2
    assert "skipping 2 unreadable image(s)" in caplog.text


def test_preprocessing_comes_from_timm_config() -> None:
    model = create_model("test_resnet", pretrained=False)
    prep = preprocessing_for(model, 64)
    cfg = model.pretrained_cfg
    assert prep.mean == pytest.approx(tuple(cfg["mean"])) and prep.std == pytest.approx(tuple(cfg["std"]))
    assert prep.input_size == 64 and prep.cache_size == int(64 / prep.crop_pct)


def test_transforms_shapes_and_augmentation() -> None:
    model = create_model("test_resnet", pretrained=False)
    prep = preprocessing_for(model, 32)
    torch.manual_seed(0)
    x = torch.randint(0, 256, (3, prep.cache_size, prep.cache_size), dtype=torch.uint8)
    ev = eval_transform(prep)(x)
    assert ev.shape == (3, 32, 32) and ev.dtype == torch.float32
    torch.testing.assert_close(ev, eval_transform(prep)(x))  # eval is deterministic
    aug = train_transform(prep)
    a, b = aug(x), aug(x)
    assert a.shape == (3, 32, 32) and not torch.equal(a, b)  # training is augmented


def test_preprocess_image_matches_cache_path(synthetic_root: Path, tmp_path: Path) -> None:
    table = load_table(synthetic_root)
    model = create_model("test_resnet", pretrained=False)
    prep = preprocessing_for(model, 32)
    cache = build_cache(table, size=prep.cache_size, cache_dir=tmp_path / "c", interpolation=prep.interpolation)
    from core.data.transforms import to_chw_tensor

    via_cache = eval_transform(prep)(to_chw_tensor(cache.array[0]))
    direct = preprocess_image(table["path"][0], prep)[0]
    torch.testing.assert_close(via_cache, direct)


def test_numpy_serving_preprocessing_matches_eval_transform() -> None:
    from core.data.transforms import eval_array, to_chw_tensor

    prep = preprocessing_for(create_model("test_resnet", pretrained=False), 48)
    for size in (prep.cache_size, prep.cache_size + 1):  # odd margins too
        square = np.random.default_rng(size).integers(0, 256, (size, size, 3), dtype=np.uint8)
        reference = eval_transform(prep)(to_chw_tensor(square)).numpy()
        np.testing.assert_allclose(eval_array(square, prep), reference, atol=1e-5)

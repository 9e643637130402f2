"""The decoded-image cache (hit, invalidation, bad images) and preprocessing from the model's config."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from core.data.cache import build_cache
from core.data.layout import load_table
from core.data.transforms import (
    eval_array,
    image_array,
    normalization,
    preprocessing_for,
    to_chw_tensor,
    train_transform,
)
from core.errors import DatasetError
from core.models import create_model


def test_cache_roundtrip_and_hit(synthetic_copy: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    table = load_table(synthetic_copy)
    cache = build_cache(table, size=40, cache_dir=tmp_path / "c")
    assert cache.array.shape == (len(table), 40, 40, 3) and cache.array.dtype == np.uint8
    assert cache.array[:5].std() > 0
    written = cache.path.stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="core.data.cache"):  # a second build decodes nothing, writes nothing
        again = build_cache(table, size=40, cache_dir=tmp_path / "c")
    assert "image cache hit" in caplog.text and "image cache written" not in caplog.text
    assert again.path == cache.path and again.path.stat().st_mtime_ns == written
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
    square = np.random.default_rng(0).integers(0, 256, (prep.cache_size, prep.cache_size, 3), dtype=np.uint8)
    ev = eval_array(square, prep)
    assert ev.shape == (3, 32, 32) and ev.dtype == np.float32
    np.testing.assert_array_equal(ev, eval_array(square, prep))  # eval is deterministic
    aug = train_transform(prep)
    a, b = aug(square), aug(square)
    assert a.shape == (3, 32, 32) and a.dtype == torch.float32 and not torch.equal(a, b)  # training is augmented


def test_image_path_matches_cache_path(synthetic_root: Path, tmp_path: Path) -> None:
    table = load_table(synthetic_root)
    model = create_model("test_resnet", pretrained=False)
    prep = preprocessing_for(model, 32)
    cache = build_cache(table, size=prep.cache_size, cache_dir=tmp_path / "c", interpolation=prep.interpolation)
    via_cache = eval_array(cache.array[0], prep)  # what evaluation sees
    direct = image_array(table["path"][0], prep)  # what serving sees for the same file
    np.testing.assert_array_equal(via_cache, direct)


def test_evaluation_preprocessing_matches_training_normalisation() -> None:
    prep = preprocessing_for(create_model("test_resnet", pretrained=False), 48)
    training = v2.Compose([v2.CenterCrop(prep.input_size), *normalization(prep)])  # training's steps, unaugmented
    for size in (prep.cache_size, prep.cache_size + 1):  # odd margins too
        square = np.random.default_rng(size).integers(0, 256, (size, size, 3), dtype=np.uint8)
        reference = training(to_chw_tensor(square)).numpy()
        np.testing.assert_allclose(eval_array(square, prep), reference, atol=1e-5)

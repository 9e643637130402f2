"""Training levers of issue 31: the ISIC winners' augmentation policy, mixup and cutmix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from core.config import build_config
from core.data.transforms import Preprocessing, train_transform
from core.errors import ConfigError
from core.jobs.train import run_training
from core.train.config import TrainConfig
from core.train.mixing import BatchMix, mixed_loss
from tests.configs import tiny_config

PREP = Preprocessing(input_size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), crop_pct=0.875,
                     interpolation="bicubic")


def test_the_isic_policy_turns_by_any_angle_and_cuts_out() -> None:
    torch.manual_seed(0)
    square = np.full((PREP.cache_size, PREP.cache_size, 3), 200, dtype=np.uint8)  # bright, flat: what moves shows
    isic, basic = train_transform(PREP, policy="isic"), train_transform(PREP, policy="basic")
    isic_out = torch.stack([isic(square) for _ in range(40)])
    basic_out = torch.stack([basic(square) for _ in range(40)])
    assert isic_out.shape == (40, 3, 32, 32)
    # black corners from rotations by angles that are not multiples of 90 degrees, and cutout's mean-coloured (0)
    # rectangles: the basic policy (crops, flips, quarter turns) leaves a flat image flat
    assert (isic_out == 0).flatten(1).any(1).float().mean() > 0.5
    assert not (basic_out == 0).any() and (isic_out.amin(dim=(1, 2, 3)) < -0.9).any()
    with pytest.raises(ValueError, match="allowed: basic, isic"):
        train_transform(PREP, policy="strong")
    with pytest.raises(ConfigError, match="aug_policy: 'strong' is not allowed; allowed: basic, isic"):
        build_config(TrainConfig, overrides={"aug_policy": "strong"})


def test_mixup_mixes_pairs_and_the_loss_weighs_both_labels() -> None:
    torch.manual_seed(0)
    images, targets = torch.randn(8, 3, 16, 16), torch.arange(8)  # label i: image i, so a partner is its label
    mixed = BatchMix(mixup_alpha=0.4)(images, targets)
    assert mixed is not None and 0 <= mixed.lam <= 1 and sorted(mixed.partner.tolist()) == list(range(8))
    for i in range(8):  # each image is lam * itself + (1 - lam) * its partner
        j = int(mixed.partner[i])
        torch.testing.assert_close(mixed.images[i], mixed.lam * images[i] + (1 - mixed.lam) * images[j])
    logits = torch.randn(8, 8)
    loss = nn.CrossEntropyLoss()
    expected = mixed.lam * loss(logits, targets) + (1 - mixed.lam) * loss(logits, mixed.partner)
    torch.testing.assert_close(mixed_loss(loss, logits, targets, mixed), expected)
    torch.testing.assert_close(mixed_loss(loss, logits, targets, None), loss(logits, targets))


def test_cutmix_pastes_a_box_and_lam_is_the_share_of_pixels_kept() -> None:
    torch.manual_seed(1)
    images = torch.stack([torch.full((3, 20, 20), float(i)) for i in range(6)])
    for _ in range(20):
        mixed = BatchMix(cutmix_alpha=1.0)(images, torch.arange(6))
        own = (mixed.images == images).all(1).float().mean(dim=(1, 2))  # per image: share of pixels still its own
        for i in range(6):
            if int(mixed.partner[i]) != i:
                assert float(own[i]) == pytest.approx(mixed.lam)


def test_mixing_off_or_skipped_leaves_the_batch_alone() -> None:
    images, targets = torch.randn(4, 3, 8, 8), torch.arange(4)
    assert BatchMix()(images, targets) is None
    assert BatchMix(mixup_alpha=0.2, prob=0.0)(images, targets) is None
    with pytest.raises(ConfigError, match="mix_prob"):
        TrainConfig(mix_prob=1.5)
    with pytest.raises(ConfigError, match="mixup_alpha"):
        TrainConfig(mixup_alpha=-1)


def test_a_run_with_the_isic_policy_mixup_and_cutmix_trains_and_is_repeatable(synthetic_root: Path,
                                                                              tmp_path: Path) -> None:
    levers = dict(epochs=1, aug_policy="isic", mixup_alpha=0.2, cutmix_alpha=1.0, mix_prob=0.8)
    a = run_training(tiny_config(synthetic_root, tmp_path / "a", **levers))
    b = run_training(tiny_config(synthetic_root, tmp_path / "b", **levers))
    plain = run_training(tiny_config(synthetic_root, tmp_path / "c", epochs=1))
    assert a.history[0]["train_loss"] == pytest.approx(b.history[0]["train_loss"])
    assert a.history[0]["train_loss"] != pytest.approx(plain.history[0]["train_loss"])

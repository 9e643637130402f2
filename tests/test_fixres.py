"""The budget-aware schedule and the FixRes phase: low-resolution epochs, then the deployed size, evaluated there."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from timm.models import ResNet

from core.errors import ConfigError
from core.jobs.train import run_training
from core.train.config import TrainConfig
from core.train.loop import lr_schedule
from tests.configs import tiny_config


def _factors(kind: str, *, warmup: int = 2, total: int = 10) -> list[float]:
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    sched = lr_schedule(opt, kind=kind, warmup_steps=warmup, total_steps=total)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_linear_schedule_decays_to_zero_at_the_end_of_the_budget() -> None:
    lin = _factors("linear")
    assert lin[:2] == pytest.approx([0.5, 1.0])
    assert lin[2:] == pytest.approx([1.0 - i / 8 for i in range(8)])
    cos = _factors("cosine")
    assert cos[2] == pytest.approx(1.0) and cos[6] == pytest.approx(0.5) and lin[6] == pytest.approx(0.5)
    assert cos[4] > lin[4]  # cosine stays high longer
    with pytest.raises(ConfigError, match="schedule"):
        from core.config import build_config

        build_config(TrainConfig, overrides={"schedule": "step"})


def test_fixres_settings_are_checked() -> None:
    cfg = TrainConfig(img_size=160, low_res_size=128, epochs=10, fixres_epochs=2)
    assert [cfg.input_size_at(e) for e in range(10)] == [128] * 8 + [160] * 2
    assert [e for e in range(10) if cfg.fixres_starts(e)] == [8]
    assert [TrainConfig(img_size=160).input_size_at(e) for e in range(3)] == [160] * 3
    with pytest.raises(ConfigError, match="low_res_size must be 0"):
        TrainConfig(img_size=160, low_res_size=160)
    with pytest.raises(ConfigError, match="fixres_epochs must be in 0..9"):
        TrainConfig(img_size=160, low_res_size=128, epochs=10, fixres_epochs=10)
    every_epoch_low = TrainConfig(img_size=160, low_res_size=128, epochs=4, fixres_epochs=0)
    assert [every_epoch_low.input_size_at(e) for e in range(4)] == [128] * 4
    assert not any(every_epoch_low.fixres_starts(e) for e in range(4))


def test_fixres_trains_low_then_at_the_deployed_size_and_evaluates_there(synthetic_root: Path,
                                                                         tmp_path: Path) -> None:
    trained: list[int] = []  # the input size of every training batch, in order
    evaluated: set[int] = set()  # the input sizes of every batch scored (validation each epoch, the final scoring)

    def record(module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        if isinstance(module, ResNet):  # the whole network (or its EMA copy), not its layers
            (trained.append if module.training else evaluated.add)(args[0].shape[-1])

    hook = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        cfg = tiny_config(synthetic_root, tmp_path, img_size=32, low_res_size=24,
                          epochs=3, fixres_epochs=1, ema_decay=0.9, schedule="linear")
        result = run_training(cfg)
    finally:
        hook.remove()
    low, high = trained.count(24), trained.count(32)
    assert trained == [24] * low + [32] * high and low == 2 * high > 0  # two epochs at 24 px, then one at 32
    assert evaluated == {32}  # every epoch is scored at the size that is deployed
    checkpoint = torch.load(result.run_dir / "checkpoint.pth", weights_only=False)
    ema = {k.removeprefix("module."): v for k, v in checkpoint["ema"].items()}
    for k, v in checkpoint["model"].items():  # inside the FixRes phase the kept weights follow the model exactly
        torch.testing.assert_close(ema[k], v, msg=k)
    assert checkpoint["history"][-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # linear: zero at the budget's end

"""Training end to end on tiny synthetic data: stored run, reloadable model, interruption and resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import core.jobs.train as train_job
import core.train.loop as train_mod
from core.artifacts.card import load_trained_model
from core.data.dataset import balanced_sampler, class_weights
from core.errors import ConfigError
from core.jobs.train import run_training
from core.losses import make_criterion
from core.models import create_model
from core.store.results import ResultsStore
from core.train.config import TrainConfig
from core.train.loop import make_optimizer
from tests.configs import tiny_config


def test_train_stores_run_and_model_reloads(synthetic_root: Path, tmp_path: Path) -> None:
    cfg = tiny_config(synthetic_root, tmp_path)
    result = run_training(cfg)
    assert set(result.evaluations) == {"val", "test"}
    with ResultsStore(cfg.db, read_only=True) as store:
        run = store.runs().iloc[0]
        assert run.run_id == result.run_id and run.kind == "train" and len(run.split_hash) == 16
        metrics = store.metrics(result.run_id)
        assert set(metrics["split"]) == {"val", "test"}
        assert {"accuracy", "balanced_accuracy", "auc_macro_ovr", "kappa", "mcc", "ece"} <= set(metrics["name"])
        assert sorted(store.query("SELECT DISTINCT epoch FROM history")["epoch"]) == [0, 1]
        assert len(store.query("SELECT * FROM artifacts")) == 3
    for name in ("model.pt", "card.json", "config.yaml", "split.csv", "history.csv", "checkpoint.pth"):
        assert (result.run_dir / name).is_file(), name
    # Reload by run id and by path: identical outputs.
    model_a, card, _ = load_trained_model(result.run_id, models_dir=cfg.output_dir)
    model_b, _, _ = load_trained_model(result.run_dir)
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(model_a(x), model_b(x))
    assert card.preprocessing.input_size == 32 and card.classes[0] == "mel"


def test_interrupt_leaves_checkpoint_and_no_rows_then_resume(synthetic_root: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tiny_config(synthetic_root, tmp_path, epochs=2)
    real = train_mod.train_one_epoch

    def interrupted(*args: object, epoch: int, **kw: object) -> dict[str, float]:
        if epoch == 1:
            raise KeyboardInterrupt
        return real(*args, epoch=epoch, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(train_mod, "train_one_epoch", interrupted)
    ResultsStore(cfg.db).close()  # an existing, empty store
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg)
    run_dir = next(Path(cfg.output_dir).iterdir())
    assert torch.load(run_dir / "checkpoint.pth", weights_only=False)["epoch"] == 0
    with ResultsStore(cfg.db, read_only=True) as store:
        assert store.runs().empty  # nothing half-written
    monkeypatch.setattr(train_mod, "train_one_epoch", real)
    result = run_training(tiny_config(synthetic_root, tmp_path, resume=str(run_dir)))
    assert result.run_id == run_dir.name
    assert [int(h["epoch"]) for h in result.history] == [0, 1]
    with ResultsStore(cfg.db, read_only=True) as store:
        assert store.runs()["run_id"].tolist() == [run_dir.name]


def test_balanced_sampler_mode_runs(synthetic_root: Path, tmp_path: Path) -> None:
    result = run_training(tiny_config(synthetic_root, tmp_path, epochs=1, imbalance="balanced_sampler"))
    assert result.history[0]["train_loss"] > 0


def test_class_weights_and_sampler() -> None:
    labels = np.array([1] * 90 + [0] * 10)
    w = class_weights(labels)
    assert w[0] == pytest.approx(5.0) and w[1] == pytest.approx(100 / 180) and w[2] == 0
    drawn = np.array(list(balanced_sampler(labels, seed=0)))
    share_minor = np.mean(labels[drawn] == 0)
    assert 0.35 < share_minor < 0.65  # the 10% class is drawn about half the time


def test_seeded_runs_are_reproducible(synthetic_root: Path, tmp_path: Path) -> None:
    a = run_training(tiny_config(synthetic_root, tmp_path / "a", epochs=1))
    b = run_training(tiny_config(synthetic_root, tmp_path / "b", epochs=1))
    assert a.history[0]["train_loss"] == pytest.approx(b.history[0]["train_loss"])
    assert a.evaluations["test"].metrics == pytest.approx(b.evaluations["test"].metrics)


def test_frozen_stages_keep_their_weights_and_statistics(synthetic_root: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import core.models as models_mod

    cfg = tiny_config(synthetic_root, tmp_path, model="test_efficientnet", epochs=1, freeze_stages=1)
    before: dict[str, torch.Tensor] = {}
    real_create = models_mod.create_model

    def remember(*args: object, **kw: object) -> torch.nn.Module:
        model = real_create(*args, **kw)  # type: ignore[arg-type]
        before.update({k: v.clone() for k, v in model.state_dict().items()})
        return model

    monkeypatch.setattr(train_job, "create_model", remember)
    result = run_training(cfg)
    after = torch.load(result.run_dir / "model.pt", weights_only=True)
    frozen = [k for k in before if k.startswith(("conv_stem.", "bn1.", "blocks.0."))]
    trained = [k for k in before if k.startswith(("blocks.1.", "classifier.")) and before[k].is_floating_point()]
    assert frozen and trained
    for k in frozen:  # weights and batch-norm running statistics
        torch.testing.assert_close(after[k], before[k], msg=k)
    assert any(not torch.equal(after[k], before[k]) for k in trained)
    with pytest.raises(ConfigError, match="freeze_stages=9: this model has 5 stages after the stem; allowed: 0-5"):
        run_training(tiny_config(synthetic_root, tmp_path / "x", model="test_efficientnet", freeze_stages=9))


def test_logit_adjusted_loss() -> None:
    labels = np.array([0] * 80 + [1] * 15 + [2] * 5)
    criterion = make_criterion("logit_adjusted", labels, logit_adjust_tau=1.0)
    prior = torch.tensor([0.8, 0.15, 0.05, 0, 0, 0, 0])
    logits, targets = torch.randn(4, 7), torch.tensor([0, 1, 2, 2])
    expected = F.cross_entropy(logits + torch.log(prior.clamp_min(1e-8)), targets)
    torch.testing.assert_close(criterion(logits, targets), expected)
    # tau = 0 is plain cross-entropy; at zero logits the rare class costs more than the frequent one.
    plain = make_criterion("logit_adjusted", labels, logit_adjust_tau=0.0)
    torch.testing.assert_close(plain(logits, targets), F.cross_entropy(logits, targets))
    zero = torch.zeros(1, 7)
    assert criterion(zero, torch.tensor([2])) > criterion(zero, torch.tensor([0]))
    with pytest.raises(ConfigError, match="allowed: weighted_loss, balanced_sampler, logit_adjusted, none"):
        make_criterion("focal", labels)


def test_logit_adjusted_mode_trains(synthetic_root: Path, tmp_path: Path) -> None:
    result = run_training(tiny_config(synthetic_root, tmp_path, epochs=1, imbalance="logit_adjusted"))
    assert np.isfinite(result.history[0]["train_loss"])


def test_layer_decay_scales_learning_rates_towards_the_input() -> None:
    model = create_model("test_efficientnet", pretrained=False)
    base = TrainConfig(model="test_efficientnet", lr=1e-2, layer_decay=1.0)
    flat = make_optimizer(model, base)
    assert {g["lr"] for g in flat.param_groups} == {1e-2}
    assert {g["weight_decay"] for g in flat.param_groups} == {0.0, base.weight_decay}  # no decay on norms/biases
    decayed = make_optimizer(model, TrainConfig(model="test_efficientnet", lr=1e-2, layer_decay=0.5))
    lr_of = {id(p): g["lr"] for g in decayed.param_groups for p in g["params"]}
    assert lr_of[id(model.classifier.weight)] == pytest.approx(1e-2)
    assert lr_of[id(model.conv_stem.weight)] < lr_of[id(model.blocks[-1][0].conv_pwl.weight)] < 1e-2
    with pytest.raises(ConfigError, match=r"layer_decay must be in \(0, 1\]"):
        TrainConfig(layer_decay=0.0)


def test_ema_weights_are_the_ones_evaluated_and_saved(synthetic_root: Path, tmp_path: Path) -> None:
    result = run_training(tiny_config(synthetic_root, tmp_path, epochs=1, ema_decay=0.9))
    saved = torch.load(result.run_dir / "model.pt", weights_only=True)
    checkpoint = torch.load(result.run_dir / "checkpoint.pth", weights_only=False)
    ema = {k.removeprefix("module."): v for k, v in checkpoint["ema"].items()}
    assert saved.keys() == ema.keys()
    for k in saved:
        torch.testing.assert_close(saved[k], ema[k], msg=k)
    assert any(not torch.equal(saved[k], checkpoint["model"][k]) for k in saved if saved[k].is_floating_point())

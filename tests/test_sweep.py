"""The compression sweep: every cell stored as a child run, resumable, shardable, shards ingested once."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

import core.train.loop as train_mod
from core.cli import run_cli
from core.config import build_config
from core.errors import ConfigError
from core.jobs.sweep import Group, SweepConfig, plan_groups, run_sweep, shard_groups
from core.jobs.sweep.build import build_group
from core.jobs.train import TrainResult
from core.store.results import ResultsStore, ingest
from core.train.config import TrainConfig
from core.train.parent import load_parent
from scripts import evaluate as evaluate_cli
from tests.configs import cv_recipe, sweep_config

REPO = Path(__file__).resolve().parent.parent


def test_sweep_cells_are_stored_as_children_and_resume(trained_tiny: TrainResult, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    cfg = sweep_config(trained_tiny, tmp_path)
    summary = run_sweep(cfg)
    assert len(summary) == 7  # 2 ratios x 3 modes + 1 unstructured
    with ResultsStore(cfg.db, read_only=True) as store:
        runs = store.runs()
        assert (runs["parent_run_id"] == trained_tiny.run_id).all() and (runs["kind"] == "variant").all()
        assert runs["split_hash"].nunique() == 1  # all cells on the parent's split
        deploy = store.query("SELECT run_id, name, value FROM metrics WHERE split='deploy'")
        assert {"size_mb", "latency_b1_ms", "params", "macs", "sparsity"} <= set(deploy["name"])
        history = store.query("SELECT DISTINCT run_id FROM history")["run_id"]
        assert history.str.contains(r"\.p0\.5\.").all() and len(history) == 3  # only fine-tuned cells
        per_class = store.query("SELECT count(*) n FROM per_class WHERE split='test'")["n"][0]
        assert per_class == 7 * 7
    row = summary.set_index("variant")
    assert row.loc["dense-torch_fp32", "size_x"] == 1.0
    assert row.loc["pruned-0.5-static", "size_x"] > 2  # structured + int8: really smaller
    assert row.loc["unstructured-0.5-fp32", "size_x"] < 1.2  # sparse but stored dense: not smaller
    # A rerun skips every cell.
    again = run_sweep(cfg)
    assert len(again) == 7
    with ResultsStore(cfg.db, read_only=True) as store:
        assert len(store.runs()) == 7
    # Any variant folder is evaluable by the evaluate CLI (ONNX here).
    variant = Path(cfg.variants_dir) / trained_tiny.run_id / "pruned-0.5-static"
    assert (variant / "card.json").is_file() and (variant / "model.onnx").is_file()
    code = run_cli(evaluate_cli.main, evaluate_cli.get_args_parser(),
                   ["--model", str(variant), "--data", trained_tiny.config.data_dir, "--no-store",
                    "--cache-dir", str(tmp_path / "cache")])
    out = capsys.readouterr().out
    assert code == 0 and "balanced_accuracy=" in out and "uncertain_share=" in out  # scored as deployed


def test_shards_partition_the_grid_and_ingest_once(trained_tiny: TrainResult, tmp_path: Path) -> None:
    groups = plan_groups(sweep_config(trained_tiny, tmp_path, ratios=[0.0, 0.25, 0.5], unstructured=[]))
    parts = [shard_groups(groups, f"{i}/2") for i in range(2)]
    assert sorted(parts[0] + parts[1], key=groups.index) == groups and not set(parts[0]) & set(parts[1])

    stores = []
    for i in range(2):
        cfg = sweep_config(trained_tiny, tmp_path, ratios=[0.0, 0.25], modes=["fp32"], unstructured=[], shard=f"{i}/2",
                   db=str(tmp_path / f"shard{i}.duckdb"))
        run_sweep(cfg)
        stores.append(cfg.db)
    with ResultsStore(tmp_path / "main.duckdb") as main:
        assert [ingest(main, s) for s in stores] == [1, 1]
        assert [ingest(main, s) for s in stores] == [0, 0]  # no duplicates
        assert len(main.runs()) == 2
        assert main.query("SELECT count(*) n FROM metrics WHERE split='deploy'")["n"][0] > 0
    with ResultsStore(stores[0], read_only=True) as shard:
        wanted = shard.runs()["run_id"].tolist()[:1]
    with ResultsStore(tmp_path / "selected.duckdb") as selected:  # only the runs asked for
        assert ingest(selected, stores[0], run_ids=wanted) == 1 and ingest(selected, stores[1], run_ids=wanted) == 0
        assert selected.runs()["run_id"].tolist() == wanted


def test_sweep_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="pruning ratios must be in"):
        SweepConfig(ratios=[1.5])
    with pytest.raises(ConfigError, match="shard must look like i/n"):
        SweepConfig(shard="first")
    (tmp_path / "s.yaml").write_text("modes: [fp32, int3]\n")
    with pytest.raises(ConfigError, match="modes: 'int3' is not allowed; allowed: torch_fp32, fp32, dynamic"):
        build_config(SweepConfig, yaml_path=tmp_path / "s.yaml")


def test_shipped_sweep_configs_are_valid() -> None:
    for path in sorted((REPO / "configs").glob("sweep*.yaml")):
        cfg = build_config(SweepConfig, yaml_path=path)
        assert (REPO / cfg.train_config).is_file(), f"{path.name}: train_config {cfg.train_config} does not exist"
        build_config(TrainConfig, yaml_path=REPO / cfg.train_config)


def test_static_options_make_their_own_cells() -> None:
    default = plan_groups(SweepConfig(modes=["fp32", "static"]))[0]
    tuned = plan_groups(SweepConfig(modes=["static"], calibration_method="percentile", static_exclude="depthwise"))[0]
    assert default.modes == ("fp32", "static") and tuned.modes == ("static-percentile-keepdw",)
    assert default.cell_id("r", "static") != tuned.cell_id("r", tuned.modes[0])
    assert tuned.variant(tuned.modes[0]) == "dense-static-percentile-keepdw"
    mixed = plan_groups(SweepConfig(modes=["static"], static_exclude="sensitive", static_keep_fp32=5))[0]
    assert mixed.variant(mixed.modes[0]) == "dense-static-keep5"


def test_fine_tuning_uses_the_sweep_ema_setting_not_the_parents(trained_tiny: TrainResult, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import dataclasses


    seen: list[float] = []
    real_fit = train_mod.fit

    def spy(model, *, cfg, **kw):
        seen.append(cfg.ema_decay)
        return real_fit(model, cfg=cfg, **kw)

    monkeypatch.setattr(train_mod, "fit", spy)
    parent = load_parent(str(trained_tiny.run_dir))
    parent.train_cfg = dataclasses.replace(parent.train_cfg, ema_decay=0.99)  # a parent trained with EMA
    group = Group("test_efficientnet", "structured", 0.5, ("fp32",))
    for cfg in (sweep_config(trained_tiny, tmp_path), sweep_config(trained_tiny, tmp_path, finetune_ema_decay=0.9)):
        build_group(parent, group=group, todo=["torch_fp32"], cfg=cfg)
    assert seen == [0.0, 0.9]


def test_distillation_makes_its_own_cells() -> None:
    plain = plan_groups(SweepConfig(ratios=[0.0, 0.5], modes=["static"]))
    kd = plan_groups(SweepConfig(ratios=[0.0, 0.5], modes=["static"], distill_alpha=0.5))
    assert [g.distilled for g in kd] == [False, True]  # nothing to fine-tune at ratio 0
    assert kd[0] == plain[0]
    assert kd[1].variant("static") == "pruned-0.5-kd-static" and plain[1].variant("static") == "pruned-0.5-static"
    assert kd[1].cell_id("r", "static") != plain[1].cell_id("r", "static")
    with pytest.raises(ConfigError, match="distill_alpha must be in"):
        SweepConfig(distill_alpha=1.5)


def test_a_channel_importance_other_than_magnitude_makes_its_own_cells() -> None:
    plain = plan_groups(SweepConfig(ratios=[0.0, 0.5], macs_keep=[0.75], modes=["fp32"], distill_alpha=0.5))
    taylor = plan_groups(SweepConfig(ratios=[0.0, 0.5], macs_keep=[0.75], modes=["fp32"], distill_alpha=0.5,
                                     importance="taylor"))
    assert taylor[0] == plain[0]  # the dense cells are not pruned: the same cells
    assert [g.variant("fp32") for g in taylor[1:]] == ["pruned-0.5-kd-taylor-fp32", "macs-0.75-kd-taylor-fp32"]
    assert [g.variant("fp32") for g in plain[1:]] == ["pruned-0.5-kd-fp32", "macs-0.75-kd-fp32"]
    assert {g.cell_id("r", "fp32") for g in taylor[1:]}.isdisjoint(g.cell_id("r", "fp32") for g in plain)


def test_another_recovery_recipe_named_by_a_tag_makes_its_own_cells() -> None:
    taylor = plan_groups(SweepConfig(ratios=[0.0], macs_keep=[0.25], modes=["static"], importance="taylor"))
    longer = plan_groups(SweepConfig(ratios=[0.0], macs_keep=[0.25], modes=["static"], importance="taylor",
                                     recipe_tag="e12", finetune_epochs=12))
    assert longer[0] == taylor[0]  # the dense cells have no recovery: the same cells
    assert longer[1].variant("static") == "macs-0.25-taylor-e12-static"
    assert longer[1].cell_id("r", "static") == "r.m0.25taylore12.static" != taylor[1].cell_id("r", "static")
    with pytest.raises(ConfigError, match="recipe_tag must be letters and digits"):
        SweepConfig(recipe_tag="e-12")


def test_distilled_fine_tuning_learns_from_the_frozen_dense_parent(trained_tiny: TrainResult, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from core.artifacts.card import load_trained_model

    seen = []
    real_fit = train_mod.fit

    def spy(model, *, distillation=None, **kw):
        seen.append(distillation)
        return real_fit(model, distillation=distillation, **kw)

    monkeypatch.setattr(train_mod, "fit", spy)
    parent = load_parent(str(trained_tiny.run_dir))
    cfg = sweep_config(trained_tiny, tmp_path, distill_alpha=0.5, distill_temperature=3.0)
    group = plan_groups(cfg)[1]
    info = build_group(parent, group=group, todo=["torch_fp32"], cfg=cfg).info
    (kd,) = seen
    assert (kd.alpha, kd.temperature) == (0.5, 3.0)
    dense, _, _ = load_trained_model(trained_tiny.run_dir)
    teacher = kd.teacher.state_dict()
    assert all(torch.equal(v.cpu(), teacher[k].cpu()) for k, v in dense.state_dict().items())  # unpruned, untouched
    assert info["distillation"] == {"alpha": 0.5, "temperature": 3.0, "teacher_run_id": parent.run_id}


def test_iterative_pruning_makes_its_own_cells_and_shares_the_epoch_budget() -> None:
    from core.jobs.sweep.build import step_epochs

    one_shot = plan_groups(SweepConfig(ratios=[0.0, 0.5], modes=["static"]))
    iterative = plan_groups(SweepConfig(ratios=[0.0, 0.5], modes=["static"], iterative_steps=3, distill_alpha=0.5))
    assert [g.steps for g in iterative] == [1, 3] and iterative[0] == one_shot[0]
    assert iterative[1].variant("static") == "pruned-0.5-it3-kd-static"
    assert iterative[1].cell_id("r", "static") == "r.p0.5it3kd.static"
    assert step_epochs(6, 3) == [2, 2, 2] and step_epochs(5, 3) == [1, 2, 2] and step_epochs(6, 1) == [6]
    with pytest.raises(ConfigError, match="finetune_epochs .2. must be >= iterative_steps .3."):
        SweepConfig(iterative_steps=3, finetune_epochs=2)
    with pytest.raises(ConfigError, match="iterative_steps must be >= 1"):
        SweepConfig(iterative_steps=0)


def test_iterative_pruning_fine_tunes_after_every_step(trained_tiny: TrainResult, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:

    seen: list[tuple[int, int]] = []  # (epochs asked, parameters of the model handed to fit)
    real_fit = train_mod.fit

    def spy(model, *, cfg, **kw):
        seen.append((cfg.epochs, sum(p.numel() for p in model.parameters())))
        return real_fit(model, cfg=cfg, **kw)

    monkeypatch.setattr(train_mod, "fit", spy)
    parent = load_parent(str(trained_tiny.run_dir))
    cfg = sweep_config(trained_tiny, tmp_path, finetune_epochs=2, iterative_steps=2)
    built = build_group(parent, group=plan_groups(cfg)[1], todo=["torch_fp32"], cfg=cfg)
    model, info = built.model, built.info
    assert [epochs for epochs, _ in seen] == [1, 1]  # the same two epochs as one-shot, one after each step
    assert seen[0][1] > seen[1][1] == sum(p.numel() for p in model.parameters())  # each step removed channels
    assert info["params_after"] < info["params_before"]
    assert [row["epoch"] for row in info["history"]] == [0, 1]
    assert [row["pruning_step"] for row in info["history"]] == [0, 1]
    assert info["iterative"] == {"steps": 2, "epochs_per_step": [1, 1]}


def test_quantization_aware_cells_are_int8_onnx(trained_tiny: TrainResult, tmp_path: Path) -> None:
    import onnx

    cfg = sweep_config(trained_tiny, tmp_path, ratios=[0.5], modes=["qat", "static"], unstructured=[], qat_epochs=2)
    summary = run_sweep(cfg)
    assert sorted(summary["variant"]) == ["pruned-0.5-qat", "pruned-0.5-static"]
    folder = Path(cfg.variants_dir) / trained_tiny.run_id / "pruned-0.5-qat"
    ops = {n.op_type for n in onnx.load(str(folder / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # int8 in the deployed file, not a fake-quant graph
    qat = summary.set_index("variant").loc["pruned-0.5-qat"]
    static = summary.set_index("variant").loc["pruned-0.5-static"]
    assert qat["size_mb"] < 1.5 * static["size_mb"] and 0 <= qat["balanced_accuracy"] <= 1
    card = json.loads((folder / "card.json").read_text())
    assert card["compression"]["qat"]["epochs"] == 2 and card["compression"]["quantization"] == "qat"
    # the deployed epoch was chosen on the *converted* graph's validation balanced accuracy
    chosen = card["compression"]["qat"]["selection"]
    assert [r["epoch"] for r in chosen["epochs"]] == [0, 1]
    assert chosen["chosen_epoch"] == max(chosen["epochs"], key=lambda r: r["converted_score"])["epoch"]


def test_qat_returns_the_converted_epoch_that_scored_best(trained_tiny: TrainResult) -> None:
    """Issue 19: QAT checkpoints are chosen on the converted model, not on the fake-quant graph."""
    from core.artifacts.card import load_trained_model
    from core.compress.qat import quantization_aware_finetune

    model, _, _ = load_trained_model(trained_tiny.run_dir)
    parent = load_parent(str(trained_tiny.run_dir))
    x, y = parent.split.arrays("train", 32)
    batches = [(torch.from_numpy(x[i:i + 16]), torch.from_numpy(y[i:i + 16]).long()) for i in (0, 16)]
    seen: list[torch.nn.Module] = []
    scores = iter([0.9, 0.2, 0.5])

    def score(graph: torch.nn.Module) -> float:
        seen.append(graph)
        return next(scores)

    history: list[dict[str, float]] = []
    chosen = quantization_aware_finetune(model, batches=lambda epoch: batches, criterion=torch.nn.CrossEntropyLoss(),
                                         epochs=3, lr=1e-4, example=torch.from_numpy(x[:2]), score=score,
                                         history=history)
    assert len(seen) == 3 and chosen is seen[0]  # the first epoch's conversion, not the last
    assert [r["converted_score"] for r in history] == [0.9, 0.2, 0.5]


def test_every_cell_carries_its_paired_difference_from_the_dense_parent(sweep_store: Path) -> None:
    """Δ vs the parent on the same images, with a lesion-level interval, per split and on val + test pooled."""
    from core.store.frames import variants_frame

    with ResultsStore(sweep_store, read_only=True) as store:
        df = variants_frame(store).set_index("variant")
        pooled = store.query("SELECT count(DISTINCT run_id) AS n FROM metrics WHERE split = 'val_test' "
                             "AND name = 'delta_balanced_accuracy'")["n"][0]
    cells = df[df["kind"] == "variant"]
    assert pooled == len(cells)
    same = cells.loc["dense-torch_fp32"]  # the parent itself: no difference, no spread
    assert same["bal_acc_delta"] == same["bal_acc_delta_ci_low"] == same["bal_acc_delta_ci_high"] == 0.0
    for _, cell in cells.iterrows():
        assert cell["bal_acc_delta_ci_low"] <= cell["delta_balanced_accuracy"] <= cell["bal_acc_delta_ci_high"]
        assert cell["delta_balanced_accuracy"] == pytest.approx(cell["bal_acc_delta"], abs=1e-6)
        assert cell["pooled_delta_balanced_accuracy_ci_low"] <= cell["pooled_delta_balanced_accuracy"]
    assert cells["balanced_accuracy_ci_low"].notna().all()


def test_mac_budget_cells_recover_with_every_pruned_layer_trainable(trained_tiny: TrainResult, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 19: 'macs-<f>' cells reach their budget (recorded), and recovery trains every layer, stem included,
    whatever freeze_stages the parent was trained with."""
    import dataclasses


    seen: list[int] = []
    real_fit = train_mod.fit

    def spy(model, *, cfg, **kw):
        stem = model.conv_stem.weight.detach().clone()
        result = real_fit(model, cfg=cfg, **kw)
        seen.append(cfg.freeze_stages)
        assert not torch.equal(stem, model.conv_stem.weight.detach())  # the stem learned during recovery
        return result

    monkeypatch.setattr(train_mod, "fit", spy)
    parent = load_parent(str(trained_tiny.run_dir))
    parent.train_cfg = dataclasses.replace(parent.train_cfg, freeze_stages=2)  # a parent trained with frozen stages
    group = Group("test_efficientnet", "budget", 0.8, ("fp32",))
    assert group.variant("fp32") == "macs-0.8-fp32"
    cfg = sweep_config(trained_tiny, tmp_path, finetune_epochs=1)
    info = build_group(parent, group=group, todo=["torch_fp32"], cfg=cfg).info
    assert seen == [0] and info["macs_after"] / info["macs_before"] <= 0.8 and info["residual_stream_kept"]
    assert [g.variant("x") for g in plan_groups(sweep_config(trained_tiny, tmp_path, ratios=[0.0], unstructured=[],
                                                    macs_keep=[0.5, 0.75]))
            ] == ["dense-x", "macs-0.75-x", "macs-0.5-x"]


def test_qat_converted_model_agrees_with_its_fake_quant_graph(trained_tiny: TrainResult) -> None:
    """Issue 19: with the batch-norm eps matched and the trained quantization parameters kept at conversion, the
    int8 graph is the one that was trained: top-1 agreement >= 97% on a fixed image set. Without the fixes the
    conversion recomputes the weight scales (and eps 1e-3 batch norms are not the trained model)."""
    import copy

    from core.artifacts.card import load_trained_model
    from core.compress.qat import convert_qat, match_bn_eps, prepare_qat, top1_agreement

    model, _, _ = load_trained_model(trained_tiny.run_dir)
    for m in model.modules():  # eps as in tf_efficientnet_lite*: what the QAT graph does not assume
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eps = 1e-3
    parent = load_parent(str(trained_tiny.run_dir))
    images = torch.from_numpy(parent.split.arrays("val")[0][:64])
    reference = copy.deepcopy(model).eval()
    assert match_bn_eps(model) > 0
    with torch.inference_mode():
        torch.testing.assert_close(model.eval()(images), reference(images), atol=1e-4, rtol=1e-4)  # unchanged
    prepared = prepare_qat(model, images[:2])
    from torchao.quantization.pt2e import move_exported_model_to_eval

    move_exported_model_to_eval(prepared)
    optimizer = torch.optim.AdamW(prepared.parameters(), lr=1e-4)
    x, y = parent.split.arrays("train", 64, seed=0)
    for i in range(0, 64, 16):  # a few QAT steps: scales and weights move away from their initial values
        loss = torch.nn.functional.cross_entropy(prepared(torch.from_numpy(x[i:i + 16])), torch.from_numpy(y[i:i + 16]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.inference_mode():
        fake = prepared(images).argmax(1)
    converted = convert_qat(prepared)
    with torch.inference_mode():
        agreement = float((converted(images).argmax(1) == fake).float().mean())
    assert agreement >= 0.97, agreement
    assert top1_agreement(converted, converted, images) == 1.0


def test_prune_then_train_and_lower_resolution_cells(trained_tiny: TrainResult, tmp_path: Path) -> None:
    """Issue 19: a 'ptt-<f>' cell prunes the network to a share of the *parent's* MACs before training it with the
    parent's recipe; a 'res-<px>' cell trains the recipe at a lower input size. Both are scored on the parent's
    images (paired), carry their family, the MACs they reached and their build time."""
    from core.artifacts.card import read_variant_card
    from core.store.frames import variants_frame

    cfg = sweep_config(trained_tiny, tmp_path, ratios=[0.0], unstructured=[], modes=["fp32"], prune_then_train=[0.75],
               resolutions=[24])
    assert [g.variant("fp32") for g in plan_groups(cfg)] == ["dense-fp32", "ptt-0.75-fp32", "res-24-fp32"]
    run_sweep(cfg)
    with ResultsStore(cfg.db, read_only=True) as store:
        frame = variants_frame(store).set_index("variant")
        epochs = store.query("SELECT run_id, count(DISTINCT epoch) AS n FROM history GROUP BY run_id"
                             ).set_index("run_id")["n"]
    assert frame.loc["dense-fp32", "family"] == "dense"
    assert frame.loc["ptt-0.75-fp32", "family"] == "pruned, then trained"
    assert frame.loc["res-24-fp32", "family"] == "lower resolution"
    assert frame.loc["ptt-0.75-fp32", "macs_kept"] <= 0.75 + 0.05
    assert frame.loc["res-24-fp32", "macs_kept"] == pytest.approx((24 / 32) ** 2, abs=0.08)  # no weights removed
    assert frame.loc["res-24-fp32", "params"] == frame.loc["dense-fp32", "params"]
    assert (frame.loc[["ptt-0.75-fp32", "res-24-fp32"], "build_seconds"] > 0).all()
    # Trained with the parent's whole recipe (its epoch count), not a short fine-tune.
    for variant in ("ptt-0.75-fp32", "res-24-fp32"):
        assert epochs[frame.loc[variant, "run_id"]] == trained_tiny.config.epochs
        assert pd.notna(frame.loc[variant, "pooled_delta_balanced_accuracy_ci_low"])
    card = read_variant_card(Path(cfg.variants_dir) / trained_tiny.run_id / "res-24-fp32")
    assert card.preprocessing.input_size == 24  # the site and the evaluator resize to the cell's own size


def test_a_larger_architecture_is_pruned_to_the_parents_macs(trained_tiny: TrainResult, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 19: 'ptt-<arch>-1' prunes a larger network until it has the parent's MACs (Lite1 to Lite0's)."""

    monkeypatch.setattr(train_mod, "fit", lambda model, **kw: train_mod.FitResult([], 0.0, 0, None))
    cfg = sweep_config(trained_tiny, tmp_path, ratios=[], unstructured=[], modes=["fp32"], prune_then_train=[1.0],
               prune_then_train_models=["test_resnet"])
    group = plan_groups(cfg)[0]
    assert group.variant("fp32") == "ptt-test_resnet-1-fp32" and group.architecture == "test_resnet"
    parent = load_parent(str(trained_tiny.run_dir))
    built = build_group(parent, group=group, todo=["torch_fp32"], cfg=cfg)
    info, split = built.info, built.split
    assert info["architecture"] == "test_resnet" and split.prep.input_size == parent.split.prep.input_size
    assert split.rows("test")["image_id"].tolist() == parent.split.rows("test")["image_id"].tolist()
    assert info["macs_after"] <= info["macs_before"] * 1.05  # the larger network brought down to the parent's


@pytest.mark.slow  # trains
def test_a_cross_validation_fold_is_a_sweep_parent(tmp_path: Path, synthetic_root: Path) -> None:
    """Issue 19: a fold folder is a complete run folder: its held-out fold is the sweep's validation split, so
    paired differences are out of fold."""
    from core.jobs.cv import CVConfig, run_cv

    train_cfg = cv_recipe(synthetic_root, tmp_path, epochs=1)
    result = run_cv(train_cfg, CVConfig(folds=2, cv_dir=str(tmp_path / "cv"), tta=False))
    fold = result.folder / "fold1"
    parent = load_parent(str(fold))
    folds = pd.read_csv(result.folder / "folds.csv")
    assert sorted(parent.split.rows("val")["image_id"]) == sorted(folds.loc[folds["fold"] == 1, "image_id"])
    assert set(parent.split.rows("train")["image_id"]).isdisjoint(parent.split.rows("val")["image_id"])
    summary = run_sweep(SweepConfig(train_config=str(fold / "config.yaml"), models=["test_efficientnet"],
                                    parents=[f"test_efficientnet={fold}"], ratios=[0.0], modes=["fp32"],
                                    latency_runs=2, threads=1, variants_dir=str(tmp_path / "variants"),
                                    db=str(tmp_path / "sweep.duckdb")))
    assert summary["variant"].tolist() == ["dense-fp32"]
    # the gate fitter and recalibration find the fold parent from the variant's card (it is not under models/)
    from core.artifacts.card import parent_model_dir, read_variant_card

    card = read_variant_card(tmp_path / "variants" / parent.run_id / "dense-fp32")
    assert parent_model_dir(card, models_dir=tmp_path / "no-models-here") == fold.resolve()


def test_bench_variants_times_every_variant_against_dense_fp32_onnx(sweep_store: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from scripts import bench_variants

    folder = next(p for p in (sweep_store.parent / "variants").iterdir() if p.is_dir())
    code = run_cli(bench_variants.main, bench_variants.get_args_parser(),
                   ["--variants", str(folder), "--rounds", "2", "--runs", "2", "--threads", "1",
                    "--csv", str(sweep_store.parent / "bench.csv")])
    assert code == 0
    out = capsys.readouterr().out
    assert "CPU flags:" in out and "interleaved rounds" in out
    table = pd.read_csv(sweep_store.parent / "bench.csv").set_index("variant")
    assert {"dense-fp32", "dense-torch_fp32", "pruned-0.5-static"} <= set(table.index)
    assert table.loc["dense-fp32", "faster_vs_onnx"] == 1.0 and (table["calls"] == 4).all()
    assert table.loc["pruned-0.5-static", "smaller_vs_onnx"] > 2


def test_flip_tta_is_a_predictor_option_with_its_latency_measured(sweep_store: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 20: flip TTA is the mean softmax over an image and its three flips (as cross-validated);
    bench_variants times it beside the plain model."""
    import numpy as np

    from core.serve.predict import load_predictor
    from scripts import bench_variants

    folder = next(p for p in (sweep_store.parent / "variants").iterdir() if p.is_dir())
    plain = load_predictor(str(folder / "dense-fp32"), threads=1)
    tta = load_predictor(str(folder / "dense-fp32"), threads=1, tta=True)
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32), dtype=np.float32)
    from core.calibration import calibrated_softmax

    views = [x, x[..., ::-1], x[..., ::-1, :], x[..., ::-1, ::-1]]  # what cross-validation measured
    expected = np.log(np.mean([calibrated_softmax(plain.logits(np.ascontiguousarray(v))) for v in views], axis=0))
    np.testing.assert_allclose(tta.logits(x), expected, rtol=1e-4, atol=1e-5)
    assert tta.card == plain.card
    code = run_cli(bench_variants.main, bench_variants.get_args_parser(),
                   ["--variants", str(folder), "--only", "dense-fp32", "--tta", "dense-fp32", "--rounds", "1",
                    "--runs", "2", "--threads", "1"])
    assert code == 0 and "dense-fp32+tta" in capsys.readouterr().out


def test_sparse_training_before_pruning_makes_its_own_cells(trained_tiny: TrainResult, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 19 item 4: '-sl' cells train the parent with torch-pruning's group regularisation (added to the
    gradients after every backward pass) before pruning to the MAC budget; the regularisation shrinks the groups."""
    import core.compress.prune as prune_mod
    import core.jobs.sweep.build as sweep_mod

    calls: list[int] = []
    real = prune_mod.group_sparsity_regularizer

    def counting(model, **kw):
        regularize = real(model, **kw)
        return lambda: (calls.append(1), regularize())[1]

    monkeypatch.setattr(sweep_mod, "group_sparsity_regularizer", counting)
    cfg = sweep_config(trained_tiny, tmp_path, ratios=[], unstructured=[], macs_keep=[0.8], sparse_epochs=1,
               sparse_reg=1e-2, finetune_epochs=1)
    group = plan_groups(cfg)[0]
    assert group.variant("fp32") == "macs-0.8-sl-fp32" and group.sparse
    parent = load_parent(str(trained_tiny.run_dir))
    info = build_group(parent, group=group, todo=["torch_fp32"], cfg=cfg).info
    assert calls and info["sparse_training"] == {"epochs": 1, "reg": 1e-2, "lr": cfg.finetune_lr}
    assert [row.get("sparse_training", 0) for row in info["history"]] == [1, 0]  # sparse epoch, then recovery
    assert info["macs_after"] / info["macs_before"] <= 0.8


def test_group_regularisation_pulls_channel_groups_towards_zero(trained_tiny: TrainResult) -> None:
    from core.artifacts.card import load_trained_model
    from core.compress.prune import group_sparsity_regularizer

    model, _, _ = load_trained_model(trained_tiny.run_dir)
    regularize = group_sparsity_regularizer(model, example_input=torch.randn(1, 3, 32, 32), reg=0.1)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    regularize()
    moved = [p.grad.abs().sum().item() for p in model.parameters() if p.dim() == 4]
    assert sum(moved) > 0  # a gradient towards zero where there was none
    assert model.get_classifier().weight.grad.abs().sum() == 0  # the classifier is never regularised


def test_the_store_stays_readable_by_another_process_while_a_sweep_builds(trained_tiny: TrainResult,
                                                                          tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """DuckDB admits no reader process beside a writer: a sweep that held the store open for hours left the
    dashboard saying "no results store" (seen on the real-data sweep). It opens the store only to read or write."""
    import subprocess
    import sys

    import core.jobs.sweep.cells as sweep_mod

    cfg = sweep_config(trained_tiny, tmp_path, ratios=[0.5], modes=["fp32"], unstructured=[])
    ResultsStore(cfg.db).close()
    real_build = sweep_mod.build_group
    opened = []

    def build_while_read(*args: object, **kwargs: object):
        probe = subprocess.run([sys.executable, "-c", "import sys; from core.store.results import ResultsStore; "
                                "ResultsStore(sys.argv[1], read_only=True).close()", cfg.db],
                               cwd=REPO, capture_output=True, text=True, timeout=120)
        opened.append(probe.returncode == 0 or probe.stderr[-300:])
        return real_build(*args, **kwargs)

    monkeypatch.setattr(sweep_mod, "build_group", build_while_read)
    run_sweep(cfg)
    assert opened == [True]


def test_phone_formats_are_sweep_cells_run_back_by_their_runtimes(trained_tiny: TrainResult, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from core.artifacts.card import read_variant_card
    from core.compress.modes import MODES
    from core.serve.predict import MobilePredictor, load_predictor
    from core.store.report import write_report

    modes = [m.name for m in MODES.values() if m.phone]
    cfg = sweep_config(trained_tiny, tmp_path, ratios=[0.0], unstructured=[], modes=modes)
    run_sweep(cfg)
    folder = Path(cfg.variants_dir) / trained_tiny.run_id
    with ResultsStore(cfg.db, read_only=True) as store:
        runs = store.runs().set_index("variant")
        deploy = store.query("SELECT run_id, name, value FROM metrics WHERE split='deploy' AND "
                             "name='export_top1_agreement'").set_index("run_id")["value"]
    assert sorted(runs.index) == sorted(f"dense-{m}" for m in modes)
    for mode in modes:
        card = read_variant_card(folder / f"dense-{mode}")
        suffix = MODES[mode].suffix
        runtime = card.deployment.runtime
        assert card.file == f"model{suffix}" and runtime.version
        assert runtime.operators == ("required_operators.config" if suffix == ".ort" else None)
        agreement = card.deployment.export_check.top1_agreement
        assert deploy[runs.loc[f"dense-{mode}", "run_id"]] == agreement
        if not MODES[mode].int8:
            assert agreement >= 0.99
        assert isinstance(load_predictor(folder / f"dense-{mode}"), MobilePredictor)

    with ResultsStore(cfg.db, read_only=True) as store:
        report = write_report(store, tmp_path / "report").markdown.read_text()
    assert "## Per runtime" in report and "ExecuTorch (XNNPACK)" in report and "LiteRT (TFLite)" in report

    # One command packs them for an app, with the card's input and output facts.
    from scripts import pack_mobile as pack_cli

    out = tmp_path / "app"
    assert run_cli(pack_cli.main, pack_cli.get_args_parser(), [str(folder), "--model", "dense", "--out", str(out)]) == 0
    app = json.loads((out / "lesionlite-app.json").read_text())
    card = read_variant_card(folder / "dense-pte_int8")
    assert app["input"]["height"] == card.preprocessing.input_size and app["input"]["mean"] == list(
        card.preprocessing.mean)
    assert app["output"]["classes"] == list(card.classes)
    assert {f["file"] for f in app["files"]} == {f"dense-{m}{MODES[m].suffix}" for m in modes}
    assert all((out / f["file"]).is_file() for f in app["files"])
    assert (out / "dense-ort_fp32.required_operators.config").is_file()
    pte = next(f for f in app["files"] if f["variant"] == "dense-pte_int8")
    assert pte["temperature"] == card.temperature and pte["runtime"] == "executorch-xnnpack"

    # A phone file that does not agree with its source is not kept (nor stored), and the sweep says why.
    import core.jobs.sweep.cells as sweep_module

    monkeypatch.setattr(sweep_module, "MIN_FP32_AGREEMENT", 1.01)
    again = sweep_config(trained_tiny, tmp_path, ratios=[0.0], unstructured=[], modes=["pte_fp32"],
                 db=str(tmp_path / "strict.duckdb"), variants_dir=str(tmp_path / "strict"))
    assert run_sweep(again).empty


def test_a_whole_mac_budget_distils_the_parent_into_a_copy_of_itself(trained_tiny: TrainResult, tmp_path: Path
                                                                     ) -> None:
    """'macs-1-kd' removes no channel and runs the recovery alone, distilled from the dense parent: the screen of
    whether the extra distilled epochs, not the pruning, are what a pruned cell gains."""
    cfg = sweep_config(trained_tiny, tmp_path, ratios=[], unstructured=[], macs_keep=[1.0], modes=["fp32"],
                       distill_alpha=0.5, distill_temperature=2.0)
    group = plan_groups(cfg)[0]
    assert group.variant("fp32") == "macs-1-kd-fp32" and group.distilled
    built = build_group(load_parent(str(trained_tiny.run_dir)), group=group, todo=["torch_fp32"], cfg=cfg)
    assert built.info["macs_after"] == built.info["macs_before"] and built.info["params_after"] == built.info[
        "params_before"]
    assert built.info["distillation"]["alpha"] == 0.5 and len(built.info["history"]) == cfg.finetune_epochs
    with pytest.raises(ConfigError, match=r"MAC budgets must be in \(0, 1\]"):
        SweepConfig(macs_keep=[1.5])

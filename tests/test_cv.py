"""Cross-validation end to end on tiny synthetic data: out-of-fold coverage, the summary, resume after a kill,
and the fold ensemble distilled into one model."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import core.train.loop as train_mod
from core.artifacts.card import read_trained_card
from core.calibration import calibrated_softmax, uncertain_threshold
from core.data.folds import TEST_FOLD, load_folds
from core.errors import ConfigError
from core.jobs.cv import CVConfig, fold_run_id, run_cv
from core.jobs.final import EnsembleTeacher, train_final
from core.jobs.screen import held_out
from core.store.results import ResultsStore
from core.store.summary import cv_summary
from tests.configs import cv_recipe

K = 3


@pytest.fixture(scope="module")
def finished_cv(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("cv")
    cfg = cv_recipe(synthetic_root, out)
    return cfg, run_cv(cfg, CVConfig(folds=K, cv_dir=str(out / "cv")))


def test_every_image_is_scored_out_of_fold_once_and_the_summary_is_stored(finished_cv) -> None:
    cfg, result = finished_cv
    assert result.complete and result.folds_done == list(range(K))
    folds = load_folds(result.folder / "folds.csv")
    pool = set(folds.loc[folds["fold"] != TEST_FOLD, "image_id"])
    with ResultsStore(cfg.db, read_only=True) as store:
        runs = store.runs().set_index("run_id")
        assert set(runs.loc[runs["kind"] == "cv_fold"].index) == {fold_run_id(result.cv_id, i) for i in range(K)}
        oof = store.query("SELECT run_id, image_id FROM predictions WHERE split = 'oof' AND run_id LIKE '%-fold%'")
        assert oof["image_id"].is_unique and set(oof["image_id"]) == pool
        for i in range(K):  # each fold's held-out images are exactly its fold
            held = set(oof.loc[oof["run_id"] == fold_run_id(result.cv_id, i), "image_id"])
            assert held == set(folds.loc[folds["fold"] == i, "image_id"])
        assert runs.loc[result.cv_id, "kind"] == "cv"
        metrics = store.metrics(result.cv_id).pivot_table(index="split", columns="name", values="value")
        assert {"oof", "oof_tta", "test_ensemble", "test_ensemble_tta", "oof_tta_vs_oof"} <= set(metrics.index)
        low, point, high = metrics.loc["oof", ["balanced_accuracy_ci_low", "balanced_accuracy",
                                               "balanced_accuracy_ci_high"]]
        assert low <= point <= high
        # the ensemble's test probabilities are the mean of the fold models' own
        test = store.query("SELECT run_id, image_id, probs FROM predictions WHERE split = 'test' "
                           "ORDER BY run_id, image_id")
        ens = store.query("SELECT image_id, probs FROM predictions WHERE run_id = ? AND split = 'test_ensemble' "
                          "ORDER BY image_id", [result.cv_id])
        members = np.stack([np.stack(g["probs"].to_numpy()) for _, g in test.groupby("run_id")])
        np.testing.assert_allclose(np.stack(ens["probs"].to_numpy()), members.mean(0), atol=1e-6)
        assert runs.loc[result.cv_id, "split_hash"] != runs.loc[fold_run_id(result.cv_id, 0), "split_hash"]
    with ResultsStore(cfg.db, read_only=True) as store:
        table = cv_summary(store, result.cv_id)
    assert table["scoring"].tolist()[0] == "out of fold" and "TTA gain" in table["scoring"].tolist()[-1]
    assert "[" in table.loc[0, "balanced_accuracy"]


def test_folds_keep_the_last_epoch_not_the_best_on_their_held_out_fold(finished_cv) -> None:
    cfg, result = finished_cv
    saved = np.load(result.folder / "fold0" / "oof_epochs.npz")
    assert saved["logits"].shape[0] == cfg.epochs
    with ResultsStore(cfg.db, read_only=True) as store:
        stored = store.query("SELECT image_id, probs FROM predictions WHERE run_id = ? AND split = 'oof' "
                             "ORDER BY image_id", [fold_run_id(result.cv_id, 0)])
    order = np.argsort(saved["image_ids"])
    card = read_trained_card(result.folder / "fold0")
    np.testing.assert_allclose(np.stack(stored["probs"].to_numpy()),
                               calibrated_softmax(saved["logits"][-1][order], card.temperature), atol=1e-5)


@pytest.mark.slow  # trains
def test_a_killed_cross_validation_resumes_fold_by_fold(synthetic_root: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = cv_recipe(synthetic_root, tmp_path)
    real = train_mod.train_one_epoch
    calls: list[int] = []

    def killed_in_fold_1(*args: object, epoch: int, **kw: object) -> dict[str, float]:
        calls.append(epoch)
        if len(calls) == 4:  # fold 0 ran epochs 0, 1; fold 1 ran epoch 0 and is killed in epoch 1
            raise KeyboardInterrupt
        return real(*args, epoch=epoch, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(train_mod, "train_one_epoch", killed_in_fold_1)
    with pytest.raises(KeyboardInterrupt):
        run_cv(cfg, CVConfig(folds=K, cv_dir=str(tmp_path / "cv")))
    (folder,) = (tmp_path / "cv").iterdir()
    with ResultsStore(cfg.db, read_only=True) as store:
        assert store.runs()["run_id"].tolist() == [fold_run_id(folder.name, 0)]  # fold 0 stored, nothing else
    assert torch.load(folder / "fold1" / "checkpoint.pth", weights_only=False)["epoch"] == 0
    calls.clear()
    monkeypatch.setattr(train_mod, "train_one_epoch", lambda *a, epoch, **kw: calls.append(epoch) or real(
        *a, epoch=epoch, **kw))
    result = run_cv(cv_recipe(synthetic_root, tmp_path, epochs=9, lr=1.0),  # the stored recipe wins on resume
                    CVConfig(cv_dir=str(tmp_path / "cv"), cv_resume=folder.name))
    assert calls == [1, 0, 1]  # fold 1 from its checkpoint, then fold 2; fold 0 not again
    assert result.complete and result.cv_id == folder.name
    with ResultsStore(cfg.db, read_only=True) as store:
        ids = store.runs()["run_id"].tolist()
    assert sorted(ids) == sorted([folder.name] + [fold_run_id(folder.name, i) for i in range(K)])
    with pytest.raises(ConfigError, match="nothing to resume"):
        run_cv(cfg, CVConfig(cv_dir=str(tmp_path / "cv"), cv_resume="no-such-cv"))


def test_ensemble_teacher_averages_its_members_probabilities() -> None:
    torch.manual_seed(0)
    members = [torch.nn.Linear(4, 7) for _ in range(3)]
    x = torch.randn(5, 4)
    teacher = EnsembleTeacher(members, [1.0, 2.0, 0.5])
    expected = torch.stack([(m(x) / t).softmax(1) for m, t in zip(members, [1.0, 2.0, 0.5], strict=True)]).mean(0)
    torch.testing.assert_close(teacher(x).exp(), expected)


def test_the_fold_ensemble_is_distilled_into_one_stored_model(finished_cv, tmp_path: Path) -> None:
    cfg, result = finished_cv
    final = train_final(result.cv_id, db=cfg.db, cv_dir=str(result.folder.parent), distill=True, epochs=1,
                        output_dir=str(tmp_path / "models"))
    card = read_trained_card(final.run_dir)
    assert card.variant == "student" and card.origin.distillation["teacher"].startswith(f"{K}-fold ensemble")
    assert card.origin.cv_id == result.cv_id
    folds = load_folds(result.folder / "folds.csv")
    assert card.origin.training_data.images == int((folds["fold"] != TEST_FOLD).sum())  # train + val
    with ResultsStore(cfg.db, read_only=True) as store:
        run = store.runs().set_index("run_id").loc[final.run_id]
        assert run["kind"] == "train" and run["variant"] == "student"
        assert set(store.metrics(final.run_id)["split"]) == {"test"}
    assert "balanced_accuracy_ci_low" in final.evaluations["test"].metrics
    # no validation split is left: the threshold (and the operating points, where the tiny folds allow them) are
    # fitted on the cross-validation's out-of-fold probabilities, the temperature is the folds' mean
    with ResultsStore(cfg.db, read_only=True) as store:
        pooled = held_out(store, ",".join(fold_run_id(result.cv_id, i) for i in range(K)))
    assert card.calibration.fitted_on == f"out-of-fold predictions of {result.cv_id} ({len(pooled.labels)} images)"
    assert card.uncertain_threshold == uncertain_threshold(pooled.labels, pooled.probs,
                                                           target_accuracy=cfg.uncertain_target_accuracy)
    fold_cards = [read_trained_card(result.folder / f"fold{i}") for i in range(K)]
    assert card.temperature == pytest.approx(np.mean([c.temperature for c in fold_cards]))


def test_the_report_has_a_section_per_cross_validation(finished_cv, tmp_path: Path) -> None:
    from core.store.report import _cross_validations

    cfg, result = finished_cv
    with ResultsStore(cfg.db, read_only=True) as store:
        (section,) = _cross_validations(store)
        oof = store.metrics(result.cv_id).query("split == 'oof'").set_index("name")["value"]
    assert f"Cross-validation `{result.cv_id}`" in section
    assert (f"| out of fold | {oof['balanced_accuracy']:.3f} [{oof['balanced_accuracy_ci_low']:.3f}, "
            f"{oof['balanced_accuracy_ci_high']:.3f}]") in section


def test_folds_as_ray_tasks_give_the_sequential_figures(finished_cv, synthetic_root: Path, tmp_path: Path) -> None:
    cfg, result = finished_cv
    par = cv_recipe(synthetic_root, tmp_path, cache_dir=cfg.cache_dir)
    on_ray = run_cv(par, CVConfig(folds=K, cv_dir=str(tmp_path / "cv"), ray="local"))
    assert on_ray.complete

    def figures(db: str, cv_id: str) -> dict[tuple[str, str], float]:
        with ResultsStore(db, read_only=True) as store:
            m = store.query("SELECT split, name, value FROM metrics WHERE run_id = ? AND name NOT LIKE '%_ci_%'",
                            [cv_id])
        return {(r.split, r.name): r.value for r in m.itertuples()}

    sequential, distributed = figures(cfg.db, result.cv_id), figures(par.db, on_ray.cv_id)
    assert sequential.keys() == distributed.keys() and sequential == pytest.approx(distributed, abs=1e-6)


def test_two_stored_models_are_compared_paired_on_the_same_images(finished_cv, capsys) -> None:
    """The student against the fold ensemble (or any two runs): figures and the paired difference, by lesion."""
    from core.cli import run_cli
    from scripts import compare_runs

    cfg, result = finished_cv
    args = ["--db", cfg.db, "--a", f"{fold_run_id(result.cv_id, 0)}:test", "--b", f"{result.cv_id}:test_ensemble",
            "--lesions", str(result.folder / "folds.csv")]
    assert run_cli(compare_runs.main, compare_runs.get_args_parser(), args) == 0
    out = capsys.readouterr().out
    assert "A - B (paired)" in out and "balanced_accuracy" in out and "images of" in out
    same = ["--db", cfg.db, "--a", f"{result.cv_id}:test_ensemble", "--b", f"{result.cv_id}:test_ensemble",
            "--lesions", str(result.folder / "folds.csv")]
    assert run_cli(compare_runs.main, compare_runs.get_args_parser(), same) == 0
    assert "+0.000 [+0.000, +0.000]" in capsys.readouterr().out  # a model against itself: exactly no difference
    bad = ["--db", cfg.db, "--a", "nope", "--b", result.cv_id, "--lesions", str(result.folder / "folds.csv")]
    assert run_cli(compare_runs.main, compare_runs.get_args_parser(), bad) == 2
    assert "no stored predictions for run 'nope'" in capsys.readouterr().err
    pooled = ["--db", cfg.db, "--a", f"{fold_run_id(result.cv_id, 0)}:oof+test", "--b",
              f"{fold_run_id(result.cv_id, 0)}:oof+test", "--lesions", str(result.folder / "folds.csv")]
    assert run_cli(compare_runs.main, compare_runs.get_args_parser(), pooled) == 0
    with ResultsStore(cfg.db, read_only=True) as store:
        n = store.query("SELECT count(*) n FROM predictions WHERE run_id = ? AND split IN ('oof', 'test')",
                        [fold_run_id(result.cv_id, 0)])["n"][0]
    assert f"{n} images of" in capsys.readouterr().out  # both splits' images, each once
    folds = ",".join(fold_run_id(result.cv_id, i) for i in range(K))  # every fold pooled, B from another store
    other = Path(cfg.db).with_name("copy.duckdb")
    shutil.copyfile(cfg.db, other)
    across = ["--db", cfg.db, "--a", f"{folds}:oof", "--db-b", str(other), "--b", f"{result.cv_id}:oof",
              "--lesions", str(result.folder / "folds.csv")]
    assert run_cli(compare_runs.main, compare_runs.get_args_parser(), across) == 0
    out = capsys.readouterr().out  # the folds' held-out predictions are the summary's out-of-fold ones
    assert "+0.000 [+0.000, +0.000]" in out and f"{len(result_oof_images(cfg.db, result.cv_id))} images of" in out


def test_a_lever_is_screened_on_one_fold_against_the_control(finished_cv, synthetic_root: Path,
                                                             tmp_path: Path, capsys) -> None:
    from scripts import screen_levers

    cfg, control = finished_cv
    lever_cfg = cv_recipe(synthetic_root, tmp_path, db=cfg.db, schedule="linear", img_size=32, low_res_size=24,
                       fixres_epochs=1, cache_dir=cfg.cache_dir)
    lever = run_cv(lever_cfg, CVConfig(folds=K, cv_dir=str(tmp_path / "cv"), only_folds=[0]))
    assert lever.folds_done == [0] and not lever.complete
    out = tmp_path / "screen.csv"
    args = screen_levers.get_args_parser().parse_args(
        ["--db", cfg.db, "--control", fold_run_id(control.cv_id, 0), "--levers", fold_run_id(lever.cv_id, 0),
         "--data", cfg.data_dir, "--out", str(out)])
    assert screen_levers.main(args) == 0
    table = pd.read_csv(out)
    held = load_folds(control.folder / "folds.csv").query("fold == 0")
    assert set(table["images"]) == {len(held)}  # both runs scored the same held-out fold, paired image by image
    control_row = table[(table["on"] == "control") & (table["lever"] == "(as trained)")].iloc[0]
    assert control_row["delta_balanced_accuracy"] == 0
    assert control_row["delta_balanced_accuracy_ci"] == "[+0.000, +0.000]"
    assert set(table["lever"]) == {"(as trained)", "logit_bias", "recalibrated", "metadata_fusion"}
    assert (table["train_minutes"] > 0).all() and {"git_sha", "control"} <= set(table.columns)
    assert "metadata_fusion" in capsys.readouterr().out
    with ResultsStore(cfg.db, read_only=True) as store, pytest.raises(ConfigError, match="no stored 'oof'"):
        from core.jobs.screen import screen

        screen(store, control="nope", levers=[], data_dir=cfg.data_dir)
    # archived, then screened again from a fresh store on another machine: the same table, nothing retrained
    archive = tmp_path / "archive"
    args.archive = str(archive)
    assert screen_levers.main(args) == 0
    assert len(list(archive.glob("*.parquet"))) == 2 and len(list(archive.glob("*.json"))) == 2
    args.db, args.out = str(tmp_path / "fresh.duckdb"), str(tmp_path / "again.csv")
    ResultsStore(args.db).close()
    assert screen_levers.main(args) == 0
    again = pd.read_csv(args.out)
    assert again["delta_balanced_accuracy"].tolist() == table["delta_balanced_accuracy"].tolist()


def result_oof_images(db: str, cv_id: str) -> list[str]:
    with ResultsStore(db, read_only=True) as store:
        return store.query("SELECT image_id FROM predictions WHERE run_id = ? AND split = 'oof'", [cv_id])[
            "image_id"].tolist()


def test_post_hoc_levers_screen_every_fold_pooled(finished_cv) -> None:
    """The post-hoc levers on a whole cross-validation: the folds' held-out predictions pooled (each image once, from
    the fold model that did not train on it), fitted nested over lesions; a run pooled with itself is refused."""
    from core.jobs.screen import held_out, screen

    cfg, result = finished_cv
    folds = ",".join(fold_run_id(result.cv_id, i) for i in range(K))
    with ResultsStore(cfg.db, read_only=True) as store:
        pooled = held_out(store, folds)
        table = screen(store, control=folds, levers=[], data_dir=cfg.data_dir, posthoc=("logit_bias",))
        with pytest.raises(ConfigError, match="share held-out images"):
            held_out(store, f"{fold_run_id(result.cv_id, 0)},{fold_run_id(result.cv_id, 0)}")
        parts = [held_out(store, fold_run_id(result.cv_id, i)) for i in range(K)]
    assert sorted(pooled.image_ids) == list(pooled.image_ids)
    assert set(pooled.image_ids) == set(result_oof_images(cfg.db, result.cv_id)) and len(pooled.image_ids) == sum(
        len(p.image_ids) for p in parts)
    fold_of = {i: p for p in parts for i in p.image_ids}
    first = pooled.image_ids[0]
    np.testing.assert_array_equal(pooled.probs[0], fold_of[first].probs[list(fold_of[first].image_ids).index(first)])
    assert set(table["images"]) == {len(pooled.image_ids)} and list(table["lever"]) == ["(as trained)", "logit_bias"]


def test_fusion_is_fitted_on_every_out_of_fold_image_and_measured_cross_fitted(finished_cv, tmp_path: Path,
                                                                               capsys) -> None:
    from core.cli import run_cli
    from core.jobs.fusion_fit import read_fusion
    from scripts import fit_fusion

    cfg, result = finished_cv
    out = tmp_path / "fusion.json"
    argv = ["--db", cfg.db, "--cv", result.cv_id, "--folds", str(K), "--data", cfg.data_dir, "--out", str(out)]
    assert run_cli(fit_fusion.main, fit_fusion.get_args_parser(), argv) == 0
    fusion = read_fusion(out)
    assert fusion.fitted_on["images"] == len(result_oof_images(cfg.db, result.cv_id)) and fusion.fitted_on["git_sha"]
    assert fusion.stack.fields == ("age", "sex", "localization")
    fused, image, delta = (fusion.cross_fitted[k]["balanced_accuracy"] for k in ("fused", "image", "delta"))
    assert fused[1] <= fused[0] <= fused[2] and delta[0] == pytest.approx(fused[0] - image[0], abs=2e-4)
    assert fusion.temperature > 0 and 0 < fusion.uncertain_threshold <= 1
    assert fusion.triage.malignant.val_positives + fusion.triage.melanoma.val_positives > 0
    assert "difference" in capsys.readouterr().out
    scored = argv + ["--score", f"{fold_run_id(result.cv_id, 0)}:test"]  # the fitted fusion on a run's test images
    assert run_cli(fit_fusion.main, fit_fusion.get_args_parser(), scored) == 0
    said = capsys.readouterr().out
    assert f"{fold_run_id(result.cv_id, 0)}:test: " in said and "per-class recall, fused" in said
    refused = argv + ["--fields", "age", "dx_type"]
    assert run_cli(fit_fusion.main, fit_fusion.get_args_parser(), refused) == 2
    assert "leaks the label" in capsys.readouterr().err


def test_the_refit_model_is_swept_scored_on_test_alone_and_served_by_default(finished_cv, tmp_path: Path) -> None:
    """The recipe refit on train + val has no validation split: its sweep cells are scored on test alone, inherit
    its calibration and operating points (fitted out of fold), and its dense static int8 cell is the store's
    deployed choice, by rule rather than on test figures."""
    from core.artifacts.card import read_variant_card
    from core.jobs.sweep import run_sweep
    from core.store.choosing import deployed_choice
    from tests.configs import sweep_config

    cfg, result = finished_cv
    final = train_final(result.cv_id, db=cfg.db, cv_dir=str(result.folder.parent), distill=False, epochs=1,
                        output_dir=str(tmp_path / "models"))
    parent = read_trained_card(final.run_dir)
    assert parent.variant == "final" and parent.calibration.fitted_on.startswith("out-of-fold predictions")
    assert parent.triage is None or parent.triage.fitted_on == parent.calibration.fitted_on
    sweep = sweep_config(final, tmp_path, ratios=[0.0, 0.5], unstructured=[], modes=["fp32", "static", "ort_fp32"],
                         db=cfg.db)
    run_sweep(sweep)
    folder = tmp_path / "variants" / final.run_id / "dense-static"
    card = read_variant_card(folder)
    assert card.calibration == parent.calibration and card.triage == parent.triage
    with ResultsStore(cfg.db, read_only=True) as store:
        assert set(store.metrics(card.run_id)["split"]) >= {"test"} and "val" not in set(
            store.metrics(card.run_id)["split"])
        choice = deployed_choice(store)
    assert choice.folder == folder and "refit on train + val" in choice.reason
    phone = read_variant_card(tmp_path / "variants" / final.run_id / "dense-ort_fp32").deployment.export_check
    assert phone.on == "test" and phone.top1_agreement >= 0.99  # checked against its source on test images
    with ResultsStore(cfg.db, read_only=True) as store:  # a pruned cell fine-tunes without a validation split
        pruned = store.runs().query("parent_run_id == @final.run_id and variant.str.startswith('pruned')")
    assert len(pruned) == 3 and (tmp_path / "variants" / final.run_id / "pruned-0.5-static" / "card.json").is_file()


def test_fold_models_rescored_at_their_own_size_give_the_stored_out_of_fold_predictions(finished_cv) -> None:
    """scripts.screen_eval_size scores the fold models again at other sizes: at the recipe's own size it must
    reproduce what the cross-validation stored (same models, same images, same temperature), and at another size
    score the same images differently; a different image set is refused."""
    from core.jobs.eval_size import cv_held_out_at, screen_sizes
    from core.jobs.screen import cv_held_out, metadata_rows

    cfg, result = finished_cv
    with ResultsStore(cfg.db, read_only=True) as store:
        stored = cv_held_out(store, result.cv_id, K)
    again = cv_held_out_at(result.folder, K, input_size=cfg.img_size)
    larger = cv_held_out_at(result.folder, K, input_size=cfg.img_size + 8, crop_pct=1.0)
    np.testing.assert_array_equal(again.image_ids, stored.image_ids)
    np.testing.assert_allclose(again.probs, stored.probs, atol=1e-5)
    np.testing.assert_array_equal(larger.image_ids, stored.image_ids)
    assert np.abs(larger.probs - stored.probs).max() > 1e-3
    rows = metadata_rows(cfg.data_dir, stored.image_ids)
    table = screen_sizes(stored, [larger], rows)
    assert list(table["lever"]) == ["photo alone", "+ metadata fusion"] * 2
    assert table.loc[0, "delta_balanced_accuracy"] == 0 and set(table["images"]) == {len(stored.image_ids)}
    with pytest.raises(ConfigError, match="not the same cross-validation"):
        screen_sizes(stored, [held_out_subset(larger)], rows)


def held_out_subset(run):
    from core.jobs.screen import HeldOut

    return HeldOut(run.run_id, run.image_ids[1:], run.labels[1:], run.probs[1:], run.train_minutes)

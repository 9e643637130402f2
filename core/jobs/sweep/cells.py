"""A cell: one deployable file of a group's model (a quantization mode or a phone format), measured (accuracy on
validation and test, paired differences against the dense parent, latency), recorded with its card, and stored.

Making (:func:`make_cell`) and measuring (:func:`measure_cell`) return what they found; the cell's card is built
once from those results, in :func:`cell_record`."""

from __future__ import annotations

import copy
import dataclasses
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score
from torch import nn

from core.artifacts.card import (
    CARD_NAME,
    Card,
    artifact_bytes,
    fitted_calibration,
    read_variant_card,
    write_variant,
)
from core.artifacts.mobile_runtimes import runtime_of, runtime_version
from core.artifacts.records import Calibration, Compression, Deployment, ExportCheck, Runtime, Timing
from core.calibration import calibrated_softmax
from core.compress.latency import Latency, predictor_latency
from core.compress.mobile import OPERATORS_FILE, export_mobile
from core.compress.modes import Mode, mode_of
from core.compress.qat import export_qat_onnx, graph_logits, quantization_aware_finetune
from core.compress.quantize import (
    quantize_onnx,
    torch_dynamic_quantize,
)
from core.data.prepare import PreparedSplit
from core.errors import ConfigError, ModelError
from core.intervals import interval_metrics, paired_differences
from core.jobs.sweep.build import BuiltGroup, build_group
from core.jobs.sweep.config import Group, SweepConfig, sweep_id
from core.losses import make_criterion
from core.metrics import Evaluation, evaluate_logits
from core.provenance import Provenance, machine_description
from core.serve.deployed import Scores
from core.serve.facts import card_metrics
from core.serve.predict import (
    MobilePredictor,
    OnnxPredictor,
    Predictor,
    TorchPredictor,
    load_predictor,
    predict_logits,
)
from core.store.results import Predictions, RunRecord
from core.train.loaders import train_loader
from core.train.origin import origin_of
from core.train.parent import Parent
from core.triage import Triage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Made:
    """One cell's file in its folder, the predictor that measures it, and what making it found."""

    folder: Path
    file: str
    predictor: Predictor  # its card names the cell (identity, lineage, compression); not yet calibrated
    runtime: Runtime | None = None  # a phone file's runtime
    export_check: ExportCheck | None = None  # a phone file run back against its source
    qat: dict[str, Any] | None = None  # quantization-aware training: settings and the epoch kept


def identity_card(parent: Parent, *, group: Group, label: str, built: BuiltGroup) -> Card:
    """What a cell is before it is measured: its names, lineage, preprocessing and compression."""
    split = built.split
    return Card(run_id=group.cell_id(parent.run_id, label), architecture=group.architecture,
                preprocessing=split.prep, variant=group.variant(label), parent_run_id=parent.run_id,
                origin=origin_of(parent.train_cfg, split=split, architecture=group.architecture,
                                 parent_dir=str(parent.model_dir.resolve()),
                                 distillation=built.info.get("distillation")),
                compression=Compression(pruning=group.kind, pruning_ratio=group.amount,
                                        quantization=mode_of(label).name, params=built.params, macs=built.macs,
                                        sparsity=built.sparsity))


def make_cell(parent: Parent, *, group: Group, label: str, built: BuiltGroup, cfg: SweepConfig) -> Made:
    """The deployable file of one cell in its folder, and the one predictor that measures it."""
    mode = mode_of(label)
    folder = Path(cfg.variants_dir) / parent.run_id / group.variant(label)
    if folder.exists():
        shutil.rmtree(folder)  # a leftover of an interrupted run: never stored, rebuilt from scratch
    folder.mkdir(parents=True)
    card = identity_card(parent, group=group, label=label, built=built)
    if mode.route == "qat":
        if "val" not in parent.scored_splits:
            raise ConfigError(f"{label}: quantization-aware training chooses its epoch on validation, and "
                              f"{parent.run_id} (refit on train + val) has none; sweep it without qat")
        return _qat_cell(card, folder=folder, built=built, parent=parent, cfg=cfg)
    file = f"model{mode.suffix}"
    if mode.route == "torch":
        module = torch_dynamic_quantize(copy.deepcopy(built.model)) if mode.torch_quantize else built.model
        module.zero_grad(set_to_none=True)
        torch.save(module, folder / file)
        return Made(folder, file, TorchPredictor(module, card))
    if mode.phone:
        return _mobile_cell(card, folder=folder, mode=mode, built=built, cfg=cfg)
    _quantized_onnx(built, mode=mode, out=folder / file, cfg=cfg)
    return Made(folder, file, OnnxPredictor(folder / file, card, threads=cfg.threads))


def _qat_cell(card: Card, *, folder: Path, built: BuiltGroup, parent: Parent, cfg: SweepConfig) -> Made:
    """Quantization-aware fine-tuning of the group's model; the epoch kept is the one whose *converted* graph scores
    best on validation (recorded in the card), exported as an int8 ONNX file."""
    split, train_cfg = built.split, parent.train_cfg
    selection: list[dict[str, float]] = []

    def converted_val_balanced_accuracy(graph: nn.Module) -> float:
        logits, labels = graph_logits(graph, split.loader("val", batch_size=64))
        return float(balanced_accuracy_score(labels.numpy(), logits.argmax(1).numpy()))

    converted = quantization_aware_finetune(
        copy.deepcopy(built.model),
        batches=lambda epoch: train_loader(split, train_cfg, train_cfg.seed + epoch),
        criterion=make_criterion(train_cfg.imbalance, split.labels("train"),
                                 label_smoothing=train_cfg.label_smoothing,
                                 logit_adjust_tau=train_cfg.logit_adjust_tau),
        epochs=cfg.qat_epochs, lr=cfg.qat_lr, example=torch.from_numpy(split.arrays("train", 4)[0]),
        max_batches=train_cfg.max_train_batches, score=converted_val_balanced_accuracy, history=selection)
    qat = {"epochs": cfg.qat_epochs, "lr": cfg.qat_lr,
           "flow": "torchao PT2E, X86InductorQuantizer (per-channel int8 weights), ONNX QDQ",
           "selection": {"on": "converted graph, val balanced accuracy", "epochs": selection,
                         "chosen_epoch": max(selection, key=lambda r: r["converted_score"])["epoch"]}}
    export_qat_onnx(converted, folder / "model.onnx", input_size=split.prep.input_size)
    return Made(folder, "model.onnx", OnnxPredictor(folder / "model.onnx", card, threads=cfg.threads), qat=qat)


def _quantized_onnx(built: BuiltGroup, *, mode: Mode, out: Path, cfg: SweepConfig) -> Path:
    """The group's fp32 ONNX export quantized as ``mode`` says (its ``onnx_quantize``), written to ``out``."""
    quantize_onnx(built.work / "fp32.onnx", out, mode=mode.onnx_quantize, calibration=built.calibration,
                  method=cfg.calibration_method, per_channel=cfg.per_channel, exclude=cfg.static_exclude,
                  keep_fp32=cfg.static_keep_fp32)
    return out


class ExportRejected(ModelError):
    """A phone file that ran back but does not agree with its source: not kept, not reported."""


MIN_FP32_AGREEMENT = 0.99  # an fp32 phone file must give its source's top-1 class on 99% of validation images


def _mobile_cell(card: Card, *, folder: Path, mode: Mode, built: BuiltGroup, cfg: SweepConfig) -> Made:
    """Export ``mode``'s phone file, run it back in its runtime, and check it against its source on every validation
    image (top-1 agreement, largest logit difference), recorded in the card; fp32 files below
    :data:`MIN_FP32_AGREEMENT` raise :class:`ExportRejected`. int8 files are judged by their accuracy instead."""
    source_onnx = {}

    def onnx_file(onnx_mode: str) -> Path:
        out = built.work / f"{onnx_mode}.onnx"
        if not out.is_file():
            _quantized_onnx(built, mode=mode_of(onnx_mode), out=out, cfg=cfg)
        source_onnx[onnx_mode] = out
        return out

    path = export_mobile(mode.name, folder / f"model{mode.suffix}", model=built.model, onnx_file=onnx_file,
                         input_size=built.split.prep.input_size, calibration=built.calibration)
    operators = path.with_name(OPERATORS_FILE)
    runtime = Runtime(name=runtime_of(path), version=runtime_version(path),
                      operators=operators.name if operators.is_file() else None)
    predictor = MobilePredictor(path, card, threads=cfg.threads)  # a file its runtime cannot load raises here
    reference: Predictor = (OnnxPredictor(next(iter(source_onnx.values())), card, threads=cfg.threads)
                            if source_onnx else TorchPredictor(built.model, card))
    on = "val" if len(built.split.rows("val")) else "test"  # a refit parent has no validation split
    loader = built.split.loader(on, batch_size=64)
    got, _ = predict_logits(predictor, loader)
    want, _ = predict_logits(reference, loader)
    agreement = float(np.mean(got.argmax(1) == want.argmax(1)))
    check = ExportCheck(source=f"onnx:{mode.source}" if source_onnx else "torch", on=on,
                        max_abs_logit_diff=float(np.abs(got - want).max()), top1_agreement=agreement)
    log.info("%s: %s %s, top-1 agreement with its source %.4f on %d %s images", card.variant,
             runtime.name, runtime.version, agreement, len(got), on)
    if not mode.int8 and agreement < MIN_FP32_AGREEMENT:
        raise ExportRejected(f"{card.variant}: agrees with its source on {agreement:.1%} of {on} images "
                             f"(< {MIN_FP32_AGREEMENT:.0%}); not kept")
    return Made(folder, path.name, predictor, runtime=runtime, export_check=check)


@dataclass(frozen=True)
class Measured:
    evaluations: dict[str, Evaluation]
    predictions: dict[str, Predictions]
    latency: Latency
    paired: dict[str, float]  # delta_<metric> (+ interval) vs the dense parent, on val and test pooled
    calibration: Calibration  # fitted on validation, or the refit parent's
    triage: Triage | None


def measure_cell(predictor: Predictor, *, parent: Parent, cfg: SweepConfig, split: PreparedSplit | None = None
                 ) -> Measured:
    """Accuracy (val chooses what to deploy, test reports it) and latency, through the same predictor.

    ``split``: the cell's own (the parent's rows at another input size); paired differences need the same images.
    A parent refit on train + val has no validation split: the cell is scored on test alone and inherits the
    parent's calibration and operating points (fitted on its cross-validation's out-of-fold predictions).
    """
    split = split or parent.split
    scored = parent.scored_splits
    if split is not parent.split and any(
            split.rows(s)["image_id"].tolist() != parent.split.rows(s)["image_id"].tolist() for s in scored):
        raise ConfigError("a cell is scored on other images than its parent: paired differences need the same rows")
    evaluations, predictions = {}, {}
    outputs = {name: predict_logits(predictor, split.loader(name, batch_size=64)) for name in scored}
    if "val" in outputs:
        calibration, triage = fitted_calibration(*outputs["val"], target_accuracy=cfg.uncertain_target_accuracy)
    else:
        calibration, triage = parent.card.calibration, parent.card.triage
        log.info("%s: no validation split (a refit model): calibration and operating points of its parent, fitted "
                 "on %s", predictor.card.variant, calibration.fitted_on)
    pooled = []
    for name, (logits, labels) in outputs.items():
        rows = split.rows(name)
        groups = rows["lesion_id"].to_numpy()
        evaluations[name] = evaluate_logits(labels, logits, temperature=calibration.temperature, groups=groups,
                                            triage=triage)
        probs = calibrated_softmax(logits, calibration.temperature)
        predictions[name] = Predictions(rows["image_id"].tolist(), labels, probs)
        # what the deployed model shows (core.serve.deployed): the "uncertain" share at the card's threshold
        evaluations[name].metrics.update(
            Scores(probs, labels, probs.max(axis=1) < calibration.uncertain_threshold).deployment_metrics(triage))
        reference = parent.predictions(name)
        evaluations[name].metrics.update(interval_metrics(
            paired_differences(labels, logits.argmax(1), reference, groups=groups), prefix="delta_"))
        pooled.append((labels, logits.argmax(1), reference, groups))
    labels, preds, reference, groups = (np.concatenate(parts) for parts in zip(*pooled, strict=True))
    paired = interval_metrics(paired_differences(labels, preds, reference, groups=groups), prefix="delta_")
    latency = predictor_latency(predictor, input_size=split.prep.input_size, threads=cfg.threads,
                                runs=cfg.latency_runs)
    return Measured(evaluations, predictions, latency, paired, calibration, triage)


def cell_card(made: Made, *, measured: Measured, export: ExportCheck | None, timed_on: dict[str, Any],
              threads: int) -> Card:
    """The cell's card, built once from what making and measuring it found."""
    identity = made.predictor.card
    compression = dataclasses.replace(identity.compression, qat=made.qat) if made.qat else identity.compression
    return dataclasses.replace(
        identity, file=made.file, calibration=measured.calibration, triage=measured.triage, compression=compression,
        deployment=Deployment(size_bytes=artifact_bytes(made.folder / made.file), runtime=made.runtime,
                              export_check=export,
                              latency=Timing(b1_median=measured.latency.median_ms, b1_iqr=measured.latency.iqr_ms,
                                             threads=threads, **timed_on)),
        metrics=card_metrics(measured.evaluations))


def cell_record(parent: Parent, *, group: Group, label: str, built: BuiltGroup, made: Made, measured: Measured,
                cfg: SweepConfig) -> RunRecord:
    """Write the cell's card (with its figures) and return its run record, a child run of the dense parent."""
    mode = mode_of(label)
    here = machine_description()
    export = (made.export_check if mode.phone
              else built.export if built.export and mode.route != "torch" else None)
    card = cell_card(made, measured=measured, export=export, timed_on=here, threads=cfg.threads)
    write_variant(made.folder, model_file=made.file, card=card)
    size_bytes = card.deployment.size_bytes
    deploy = {"size_bytes": float(size_bytes), "size_mb": size_bytes / 1e6,
              "latency_b1_ms": measured.latency.median_ms, "latency_b1_iqr_ms": measured.latency.iqr_ms,
              "params": float(built.params), "macs": built.macs, "sparsity": built.sparsity,
              "pruning_ratio": group.amount if group.spec.pruning_ratio_is_amount else 0.0,
              "build_seconds": built.build_seconds}
    if "macs_before" in built.info:  # of the dense parent, counted like macs_after on the same input
        deploy["macs_kept"] = built.info["macs_after"] / built.info["macs_before"]
        if group.spec.amount != "ratio":  # a budget cell's "ratio" is the share of MACs removed (its budget is named)
            deploy["pruning_ratio"] = 1 - deploy["macs_kept"]
    if export:
        deploy.update(export_max_abs_logit_diff=export.max_abs_logit_diff,
                      export_top1_agreement=export.top1_agreement)
    provenance = Provenance.here(dataset=parent.train_cfg.data_dir, dataset_fingerprint=built.split.data.fingerprint,
                                 split_hash=built.split.hash, seed=parent.train_cfg.seed, device=torch.device("cpu"))
    return RunRecord(
        run_id=card.run_id, kind="variant", scalars={"deploy": deploy, "val_test": measured.paired},
        model=group.model,  # the parent's: a larger architecture pruned down is named in the variant and card
        variant=group.variant(label), parent_run_id=parent.run_id, provenance=provenance,
        config={"sweep": dataclasses.asdict(cfg), "sweep_id": sweep_id(cfg), "group": dataclasses.asdict(group),
                "family": group.family, "mode": mode.name,
                "pruning": {k: v for k, v in built.info.items() if k != "history"},
                "timed_on": here},
        evaluations=measured.evaluations, history=built.info["history"], predictions=measured.predictions,
        artifacts={"model": made.folder / made.file, "card": made.folder / CARD_NAME},
    )


def iter_cells(parent: Parent, *, group: Group, todo: list[str], cfg: SweepConfig) -> Iterator[RunRecord]:
    """Build (prune, fine-tune, export) once, then make and measure each cell of ``todo``; yields their records."""
    built = build_group(parent, group=group, todo=todo, cfg=cfg)
    for label in todo:
        try:
            made = make_cell(parent, group=group, label=label, built=built, cfg=cfg)
        except ExportRejected as exc:
            log.error("%s", exc)
            continue
        measured = measure_cell(made.predictor, parent=parent, cfg=cfg, split=built.split)
        yield cell_record(parent, group=group, label=label, built=built, made=made, measured=measured, cfg=cfg)
    shutil.rmtree(built.work)


def retime(record: RunRecord, cfg: SweepConfig) -> RunRecord:
    """Measure the cell's latency again on this machine (its card and record updated) before it is stored."""
    folder = Path(record.artifacts["card"]).parent
    predictor = load_predictor(str(folder), threads=cfg.threads)
    latency = predictor_latency(predictor, input_size=predictor.card.preprocessing.input_size, threads=cfg.threads,
                                runs=cfg.latency_runs)
    here = machine_description()
    card = read_variant_card(folder)
    card = dataclasses.replace(card, deployment=dataclasses.replace(card.deployment, latency=Timing(
        b1_median=latency.median_ms, b1_iqr=latency.iqr_ms, threads=cfg.threads, **here, retimed_on_driver=True)))
    write_variant(folder, model_file=str(card.file), card=card)
    record.scalars["deploy"].update(latency_b1_ms=latency.median_ms, latency_b1_iqr_ms=latency.iqr_ms)
    record.config["timed_on"] = {**here, "retimed_on_driver": True,
                                 "built_on": record.config["timed_on"]["host"]}
    return record
